"""Keras Tuner search over the hyperparameters of SNGM, LARS and MSGD.

    from sngm_keras import tuning
    from sngm_keras.training import TrainConfig

    base = TrainConfig(dataset="sample", model="twoconv", optimizer="sngm", epochs=5, model_dir="tuning/sngm")
    space = tuning.SearchSpace(batch_sizes=(500,))
    hypermodel = tuning.LargeBatchHyperModel(base, space, validation_fraction=0.1)
    tuner = tuning.make_tuner(hypermodel, "random", max_trials=10, directory="tuning", project_name="sngm")
    tuner.search(verbose=1)
    tuning.write_reports(tuner)   # best.flags, trials.csv, trials.md in tuning/sngm/

The modules, each importing only those listed before it:

    space       `SearchSpace`: the hyperparameters and their ranges
    hypermodel  `LargeBatchHyperModel`: a trial trains the training app's
                model, scored on images held out of the training split
    reports     trials.csv, trials.md and best.flags of a search
    search      `make_tuner`: the tuners on a resumable search folder, and
                the repair of a search killed between Keras Tuner's writes

Errors in the arguments raise `ConfigError` naming the apps.tune flag at
fault (lr_range, momentum_choices, power_range, wd_range, batch_sizes,
validation_fraction, tuner, max_trials, objective, project_name, ...).
Nothing here parses flags or prints, except what Keras Tuner itself prints.
"""

from sngm_keras.tuning.hypermodel import LargeBatchHyperModel
from sngm_keras.tuning.reports import (
    FLAGFILE,
    TRIALS_CSV,
    TRIALS_MD,
    WALL_SECONDS,
    best_config,
    best_trial,
    markdown_table,
    trial_rows,
    write_reports,
)
from sngm_keras.tuning.search import (
    SETTINGS_FILE,
    BayesianTuner,
    HyperbandTuner,
    RandomSearchTuner,
    claim_search,
    make_tuner,
    recover_interrupted,
)
from sngm_keras.tuning.space import (
    HYPERPARAMETERS,
    OBJECTIVES,
    PAPER_BATCH_SIZE,
    SAMPLE_BATCH_SIZE,
    TUNERS,
    SearchSpace,
    check_search_options,
    default_batch_sizes,
)

__all__ = [
    "FLAGFILE",
    "HYPERPARAMETERS",
    "OBJECTIVES",
    "PAPER_BATCH_SIZE",
    "SAMPLE_BATCH_SIZE",
    "SETTINGS_FILE",
    "TRIALS_CSV",
    "TRIALS_MD",
    "TUNERS",
    "WALL_SECONDS",
    "BayesianTuner",
    "HyperbandTuner",
    "LargeBatchHyperModel",
    "RandomSearchTuner",
    "SearchSpace",
    "best_config",
    "best_trial",
    "check_search_options",
    "claim_search",
    "default_batch_sizes",
    "make_tuner",
    "markdown_table",
    "recover_interrupted",
    "trial_rows",
    "write_reports",
]
