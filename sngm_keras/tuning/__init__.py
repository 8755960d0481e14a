"""Keras Tuner search over the hyperparameters of SNGM, LARS and MSGD (see `search`)."""

from sngm_keras.tuning.search import (
    FLAGFILE, HYPERPARAMETERS, OBJECTIVES, PAPER_BATCH_SIZE, SAMPLE_BATCH_SIZE, SETTINGS_FILE, TRIALS_CSV, TRIALS_MD,
    TUNERS, WALL_SECONDS, BayesianTuner, HyperbandTuner, LargeBatchHyperModel, RandomSearchTuner, SearchSpace,
    best_config, best_trial, check_search_options, claim_search, default_batch_sizes, make_tuner, markdown_table,
    recover_interrupted, trial_rows, write_reports,
)

__all__ = [
    "FLAGFILE", "HYPERPARAMETERS", "OBJECTIVES", "PAPER_BATCH_SIZE", "SAMPLE_BATCH_SIZE", "SETTINGS_FILE", "TRIALS_CSV",
    "TRIALS_MD", "TUNERS", "WALL_SECONDS", "BayesianTuner", "HyperbandTuner", "LargeBatchHyperModel",
    "RandomSearchTuner", "SearchSpace", "best_config", "best_trial", "check_search_options", "claim_search",
    "default_batch_sizes", "make_tuner", "markdown_table", "recover_interrupted", "trial_rows", "write_reports",
]
