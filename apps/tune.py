"""Search SNGM's (or LARS', MSGD's) hyperparameters with Keras Tuner.

    python -m apps.tune --dataset=sample --model=twoconv --max_trials=10 --epochs_per_trial=5
    python -m apps.tune --dataset=cifar10 --model=resnet20 --micro_batch_size=128 --tuner=bayesian
    python -m apps.train --flagfile=tuning/sngm_twoconv_sample/best.flags

Searched: --learning_rate log-uniform in --lr_range (default 0.1,4, the paper's
SNGM rates at B = 4096), --momentum in --momentum_choices (0.9,0.95,0.99), the
poly schedule's --power in --power_range (1,2), --weight_decay log-uniform in
--wd_range (1e-5,1e-3) and --batch_size in --batch_sizes (default 500 for the
5,000-image sample, 4096 otherwise). A range MIN,MAX with MIN = MAX fixes it.

Each trial trains --epochs_per_trial epochs on the training images less a
held-out --validation_fraction of them, and is scored by --objective on that
held-out part (val_accuracy or val_loss); the test split is never used for the
search. Everything goes to --directory/--project_name/: Keras Tuner's state
(rerunning the same command resumes the search: finished trials are kept, an
interrupted one runs again; raise --max_trials to extend it), search.json (the
settings; a resume with other settings is refused), trials.csv and trials.md
(trial, hyperparameters, score, wall seconds) and best.flags, the best trial
as a flagfile for apps.train (--epochs=--final_epochs, default
--epochs_per_trial; --model_dir=best_trial_<id>/ in the search's folder).
"""

import os
import sys

from absl import flags

from apps import _config_flags
from apps._cli import fail, run, show_reading
from apps._config_flags import define_config_flags
from apps._startup import finish_library_imports
from sngm_keras.training.config import INT_LIMIT, TrainConfig, help_of
from sngm_keras.training.config_checks import keras_verbosity

FLAGS = flags.FLAGS

flags.DEFINE_string("tuner", "random", "random, bayesian or hyperband.")
flags.DEFINE_integer("max_trials", 10, "Trials of the whole search (a resumed search counts those done).")
flags.DEFINE_integer("epochs_per_trial", 10, "Epochs each trial trains (Hyperband: the most a trial trains).")
flags.DEFINE_integer("final_epochs", None, "--epochs written to best.flags (default: --epochs_per_trial).")
flags.DEFINE_string("objective", "val_accuracy", "val_accuracy or val_loss, on the held-out training images.")
flags.DEFINE_float("validation_fraction", 0.1, "Part of the training images held out to score trials.")
flags.DEFINE_string("directory", "tuning", "Folder of searches.")
flags.DEFINE_string("project_name", None, "The search's folder in --directory (default <optimizer>_<model>_<dataset>).")
flags.DEFINE_bool("overwrite", False, "Discard an existing search of that name instead of resuming it.")
flags.DEFINE_list("lr_range", ["0.1", "4"], "MIN,MAX of the learning rate (log-uniform).")
flags.DEFINE_list("momentum_choices", ["0.9", "0.95", "0.99"], "Momentum values to choose from.")
flags.DEFINE_list("power_range", ["1", "2"], "MIN,MAX of the poly schedule's power (uniform).")
flags.DEFINE_list("wd_range", ["1e-5", "1e-3"], "MIN,MAX of the weight decay (log-uniform).")
flags.DEFINE_list("batch_sizes", None, "Batch sizes to choose from (default 500 for the sample, else 4096).")
# The settings of every trial's training run, declared from TrainConfig's fields.
TRIAL_FLAGS = (
    "dataset",
    "data_dir",
    "download",
    "model",
    "optimizer",
    "micro_batch_size",
    "trust_coefficient",
    "seed",
    "augment",
    "verbose",
)
define_config_flags(TRIAL_FLAGS, helps={"seed": help_of("seed") + " Also of the held-out split and of the search."})
flags.adopt_module_key_flags(_config_flags)  # listed by --help as this app's own

# ConfigError fields of the base TrainConfig that are other flags here.
_RENAMED = {"epochs": "epochs_per_trial", "model_dir": "directory", "batch_size": "batch_sizes"}


def _numbers(name, kind=float):
    values = []
    for text in FLAGS[name].value or []:
        try:
            values.append(kind(text))
        except ValueError:
            fail(f"--{name}: not a {'number' if kind is float else 'whole number'}: {text!r}")
    return tuple(values)


def _message(error):
    """The ConfigError's one line, naming this app's flags."""
    from sngm_keras.training.errors import ConfigError

    text = str(error)
    if isinstance(error, ConfigError) and error.field in _RENAMED:
        text = f"--{_RENAMED[error.field]}: {text.split(': ', 1)[1]}"
    for old, new in _RENAMED.items():
        text = text.replace(f"--{old}=", f"--{new}=")
    return text


# Settings of the base configuration that the search ignores (see
# TrainConfig.ignored_fields), refused when given.
_BASE_FLAGS = ("data_dir", "download", "trust_coefficient")


def _interrupted():
    return (
        "interrupted; rerun the same command to resume the search (finished trials are kept, the interrupted "
        "one runs again)"
    )


def main():
    from sngm_keras.data import DataError
    from sngm_keras.training.errors import ConfigError, as_config_errors

    try:
        from sngm_keras import checks
        from sngm_keras.tuning import space as search_space

        search_space.check_search_options(FLAGS.tuner, FLAGS.max_trials, FLAGS.objective)
        with as_config_errors():
            for name in ("epochs_per_trial", "final_epochs", "max_trials"):
                if FLAGS[name].value is not None:
                    checks.check_int(name, FLAGS[name].value, 1, INT_LIMIT)
        space = search_space.SearchSpace(
            lr_range=_numbers("lr_range"),
            momentum_choices=_numbers("momentum_choices"),
            power_range=_numbers("power_range"),
            wd_range=_numbers("wd_range"),
            batch_sizes=(
                _numbers("batch_sizes", int)
                if FLAGS.batch_sizes is not None
                else search_space.default_batch_sizes(FLAGS.dataset)
            ),
        ).validate()
        project_name = FLAGS.project_name or "_".join(
            (FLAGS.optimizer, FLAGS.model, os.path.basename(os.path.normpath(FLAGS.dataset)) or "dataset")
        )
        base = TrainConfig(
            dataset=FLAGS.dataset,
            data_dir=FLAGS.data_dir,
            download=FLAGS.download,
            model=FLAGS.model,
            optimizer=FLAGS.optimizer,
            batch_size=space.batch_sizes[0],
            micro_batch_size=FLAGS.micro_batch_size,
            trust_coefficient=FLAGS.trust_coefficient,
            lr_schedule="poly",
            epochs=FLAGS.epochs_per_trial,
            seed=FLAGS.seed,
            augment=FLAGS.augment,
            verbose=FLAGS.verbose,
            model_dir=os.path.join(FLAGS.directory, project_name),
        )
        space.check_micro_batch(base.micro_batch_size)
        base.validate()
        ignored = base.ignored_fields()
        for name in _BASE_FLAGS:
            if FLAGS[name].present and name in ignored:
                raise ConfigError(name, f"{ignored[name]}; drop it")
        finish_library_imports()
        from sngm_keras import tuning
        from sngm_keras.data import progress

        with progress.reported_to(show_reading):
            hypermodel = tuning.LargeBatchHyperModel(base, space, validation_fraction=FLAGS.validation_fraction)
        tuner = tuning.make_tuner(
            hypermodel,
            FLAGS.tuner,
            max_trials=FLAGS.max_trials,
            directory=FLAGS.directory,
            project_name=project_name,
            objective=FLAGS.objective,
            overwrite=FLAGS.overwrite,
            final_epochs=FLAGS.final_epochs,
        )
        done = sum(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
        if tuner.oracle.trials:
            print(
                f"resuming the search in {tuner.project_dir}: {done} trial(s) completed, "
                f"up to {FLAGS.max_trials} in all"
            )
        tuner.search(verbose=keras_verbosity(FLAGS.verbose))
        paths = tuning.write_reports(tuner, final_epochs=FLAGS.final_epochs)
    except (ConfigError, DataError) as error:
        fail(_message(error))
    except RuntimeError as error:  # Keras Tuner: too many failed trials in a row, or a broken project
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        last = f"; the last: {lines[-1]}" if len(lines) > 1 else ""
        print(f"error: the search stopped: {lines[0]}{last}", file=sys.stderr)
        sys.exit(1)

    rows = tuning.trial_rows(tuner)
    print(tuning.markdown_table(rows, FLAGS.objective), end="")
    for row in rows:
        if row["error"]:
            print(f"trial {row['trial']} {row['status'].lower()}: {row['error']}", file=sys.stderr)
    if paths["flags"] is None:
        print(f"error: no trial completed; see {paths['md']}", file=sys.stderr)
        sys.exit(1)
    best = next(r for r in rows if r["best"])
    print(
        f"best trial {best['trial']}: {FLAGS.objective} {best['score']:.4f}; "
        f"train it with: python -m apps.train --flagfile={os.path.abspath(paths['flags'])}"
    )


if __name__ == "__main__":
    run(main, interrupted=_interrupted)
