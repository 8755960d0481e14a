"""Keras Tuner search over the hyperparameters of SNGM, LARS and MSGD.

    from sngm_keras import tuning
    from sngm_keras.training import TrainConfig

    base = TrainConfig(dataset="sample", model="twoconv", optimizer="sngm", epochs=5, model_dir="tuning/sngm")
    space = tuning.SearchSpace(batch_sizes=(500,))
    hypermodel = tuning.LargeBatchHyperModel(base, space, validation_fraction=0.1)
    tuner = tuning.make_tuner(hypermodel, "random", max_trials=10, directory="tuning", project_name="sngm")
    tuner.search(verbose=1)
    tuning.write_reports(tuner)   # best.flags, trials.csv, trials.md in tuning/sngm/

The search space (`SearchSpace`, defaults from the paper's settings at
B = 4096): the learning rate log-uniform in [0.1, 4], momentum beta one of
0.9, 0.95, 0.99, the poly schedule's power uniform in [1, 2], the weight decay
log-uniform in [1e-5, 1e-3], the batch size one of a list. A range whose two
ends are equal fixes that hyperparameter. The hyperparameters are named after
the training app's flags (learning_rate, momentum, power, weight_decay,
batch_size), and every other setting comes from the base `TrainConfig`.

`LargeBatchHyperModel` trains the training app's model (`build_model`) in
`MicroBatchModel` with the training app's optimizer and poly schedule
(`make_optimizer`) on the training app's input pipeline, and scores each trial
on a validation split held out of the TRAINING images (a seeded random
`validation_fraction` of them); the test split is never read, so the search
cannot select on it. Only in-memory datasets (the sample, CIFAR, image
folders) are supported: ImageNet is streamed and has no such split here.

`make_tuner` builds a Keras Tuner `RandomSearch`, `BayesianOptimization` or
`Hyperband` on `<directory>/<project_name>/`, which resumes where a stopped
search left off (Keras Tuner's oracle state: finished trials are kept, the
trial that was running is run again). It records the search's settings in
search.json there and refuses to resume a search made with other settings
(`ConfigError` on "project_name"), and it never lets Keras Tuner's `overwrite`
discard a search unless asked to. Each trial's wall time is kept in its
trial.json as the metric "wall_seconds".

Errors in the arguments raise `ConfigError` naming the apps.tune flag at
fault (lr_range, momentum_choices, power_range, wd_range, batch_sizes,
validation_fraction, tuner, max_trials, objective, project_name, ...).
Nothing here parses flags or prints, except what Keras Tuner itself prints.
"""

import csv
import dataclasses
import io
import json
import math
import os
import shutil
import time

import keras_tuner
import numpy as np

from sngm_keras.training.config import ConfigError
from sngm_keras.training.flagfile import flagfile_text
from sngm_keras.training.rundir import describe_differences, differences, read_json, write_atomic

TUNERS = ("random", "bayesian", "hyperband")
# Scores on the validation split held out of the training images. Test-split
# objectives are deliberately absent: selecting on the test split makes its
# accuracy an optimistic estimate.
OBJECTIVES = {"val_accuracy": "max", "val_loss": "min"}
HYPERPARAMETERS = ("learning_rate", "momentum", "power", "weight_decay", "batch_size")
WALL_SECONDS = "wall_seconds"
SETTINGS_FILE = "search.json"
FLAGFILE = "best.flags"
TRIALS_CSV = "trials.csv"
TRIALS_MD = "trials.md"

PAPER_BATCH_SIZE = 4096
SAMPLE_BATCH_SIZE = 500  # the sample has 5,000 training images


def default_batch_sizes(dataset):
    """(500,) for the 5,000-image sample, the paper's (4096,) for anything else."""
    return (SAMPLE_BATCH_SIZE,) if dataset == "sample" else (PAPER_BATCH_SIZE,)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The ranges searched; field names are the apps.tune flags.

    Ranges are (min, max); `min == max` fixes the value. The learning rate
    and the weight decay are sampled log-uniformly, the power uniformly.
    """

    lr_range: tuple = (0.1, 4.0)
    momentum_choices: tuple = (0.9, 0.95, 0.99)
    power_range: tuple = (1.0, 2.0)
    wd_range: tuple = (1e-5, 1e-3)
    batch_sizes: tuple = (PAPER_BATCH_SIZE,)

    def validate(self):
        """Raises ConfigError for the first bad field; returns self."""
        _range("lr_range", self.lr_range, positive=True)
        _range("power_range", self.power_range, positive=True)
        _range("wd_range", self.wd_range, positive=tuple(self.wd_range)[:1] != tuple(self.wd_range)[1:],
               example="1e-5,1e-3")
        choices = _values("momentum_choices", self.momentum_choices, "0.9,0.95,0.99")
        for m in choices:
            if not (_is_number(m) and 0 <= m < 1):
                raise ConfigError("momentum_choices", f"each momentum must be in [0, 1), got {m!r}")
        sizes = _values("batch_sizes", self.batch_sizes, "500,1000")
        for b in sizes:
            if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
                raise ConfigError("batch_sizes", f"each batch size must be a positive integer, got {b!r}")
        return self

    def to_dict(self):
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def fill(self, hp):
        """Declares the space in `hp` (a keras_tuner.HyperParameters); returns its values.

        The values are named after the training app's flags.
        """
        return {
            "learning_rate": _float(hp, "learning_rate", self.lr_range, log=True),
            "momentum": _choice(hp, "momentum", [float(m) for m in self.momentum_choices]),
            "power": _float(hp, "power", self.power_range, log=False),
            "weight_decay": _float(hp, "weight_decay", self.wd_range, log=True),
            "batch_size": _choice(hp, "batch_size", [int(b) for b in self.batch_sizes]),
        }


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float, np.number)) and math.isfinite(value)


def _values(field, values, example):
    values = tuple(values) if values is not None else ()
    if not values:
        raise ConfigError(field, f"empty; give at least one value, e.g. {example}")
    if len(set(values)) != len(values):
        repeated = next(v for v in values if values.count(v) > 1)
        raise ConfigError(field, f"{repeated} is given more than once")
    return values


def _range(field, values, positive, example=None):
    example = example or {"lr_range": "0.1,4", "power_range": "1,2"}.get(field, "MIN,MAX")
    values = tuple(values) if values is not None else ()
    if not values:
        raise ConfigError(field, f"empty range; give MIN,MAX, e.g. {example}")
    if len(values) != 2:
        raise ConfigError(field, f"a range is two numbers MIN,MAX (e.g. {example}), got {len(values)}")
    low, high = values
    for value in values:
        if not _is_number(value):
            raise ConfigError(field, f"not a finite number: {value!r}")
    if low > high:
        raise ConfigError(field, f"inverted range {low:g},{high:g}; give MIN,MAX with MIN <= MAX")
    if positive and low <= 0:
        log = " (it is sampled log-uniformly; 0,0 fixes it at 0)" if field == "wd_range" else ""
        raise ConfigError(field, f"must be > 0{log}, got {low:g}")
    if low < 0:
        raise ConfigError(field, f"must be >= 0, got {low:g}")


def _float(hp, name, bounds, log):
    low, high = (float(b) for b in bounds)
    if low == high:
        return hp.Fixed(name, low)
    return hp.Float(name, min_value=low, max_value=high, sampling="log" if log else "linear")


def _choice(hp, name, values):
    if len(values) == 1:
        return hp.Fixed(name, values[0])
    return hp.Choice(name, values)


class LargeBatchHyperModel(keras_tuner.HyperModel):
    """Trains `config`'s model with its optimizer, the hyperparameters from `space`.

    Args:
        config: the base `TrainConfig` (dataset, model, optimizer,
            micro_batch_size, trust_coefficient, seed, augment, ...); its
            `epochs` is the epochs of each trial, its `lr_schedule` must be
            "poly" (the power is searched). `config.validate()` is called
            (it writes nothing).
        space: the `SearchSpace`.
        validation_fraction: the part of the training images held out to
            score the trials (seeded by `config.seed`, the same for all
            trials); the rest is trained on.

    `build(hp)` returns the compiled `MicroBatchModel` (micro-batches of
    `config.micro_batch_size`, or one per batch when it is None); `fit(hp,
    model, ...)` trains it on the kept training images and validates on the
    held-out ones, and returns the `History` (val_accuracy, val_loss).
    Raises ConfigError / DataError (from the data) when the configuration
    cannot be searched, before any trial runs.
    """

    def __init__(self, config, space, validation_fraction=0.1, name=None):
        super().__init__(name=name, tunable=True)
        if config.lr_schedule != "poly":
            raise ConfigError("lr_schedule", f"the search tunes the poly schedule's power, not {config.lr_schedule}")
        if config.dataset == "imagenet2012":
            raise ConfigError(
                "dataset", "tuning holds a validation split out of training images held in memory; "
                "imagenet2012 is streamed, so use the sample, cifar10, cifar100 or an image folder"
            )
        space.validate()
        for b in space.batch_sizes:
            if config.micro_batch_size and b % config.micro_batch_size:
                raise ConfigError(
                    "batch_sizes", f"{b} is not a multiple of --micro_batch_size={config.micro_batch_size}"
                )
        config.validate()
        if not _is_number(validation_fraction) or not 0 < validation_fraction < 1:
            raise ConfigError("validation_fraction", f"must be in (0, 1), got {validation_fraction!r}")
        self.config = config
        self.space = space
        self.validation_fraction = float(validation_fraction)
        self._load_data()
        largest = max(space.batch_sizes)
        if largest > self.num_train:
            raise ConfigError(
                "batch_sizes", f"{largest} is larger than the {self.num_train} training images left after holding "
                f"out {self.num_validation} for validation (--validation_fraction={validation_fraction:g})"
            )

    # -- data -------------------------------------------------------------

    def _load_data(self):
        from sngm_keras.data import ArraySplits, load_arrays, preprocessing, sources

        config = self.config
        source = sources.resolve(config.dataset)
        arrays = load_arrays(config.dataset, data_dir=config.data_dir, download=config.download)
        n = arrays.num_train
        n_val = int(round(self.validation_fraction * n))
        if not 1 <= n_val < n:
            raise ConfigError(
                "validation_fraction", f"{self.validation_fraction:g} of {n} training images leaves no validation "
                "or no training images"
            )
        # A seeded random subset, the same for every trial (folders are read
        # class by class, so "the last N%" would be a few classes).
        order = np.random.default_rng([config.seed, 0x484F4C44]).permutation(n)
        held, kept = np.sort(order[:n_val]), np.sort(order[n_val:])
        self.splits = ArraySplits(
            x_train=arrays.x_train[kept], y_train=arrays.y_train[kept],
            x_test=arrays.x_train[held], y_test=arrays.y_train[held],
            num_classes=arrays.num_classes, class_names=arrays.class_names, image_shape=arrays.image_shape,
        )
        # Statistics of the images trained on, as make_datasets computes them.
        mean, std, self._pad = preprocessing(source, self.splits)
        self._normalization = (mean, std)

    @property
    def num_train(self):
        """Training images the trials train on (the held-out ones excluded)."""
        return self.splits.num_train

    @property
    def num_validation(self):
        return self.splits.num_test

    def steps_per_epoch(self, batch_size):
        return self.num_train // batch_size

    def datasets(self, batch_size, start_epoch=0, num_epochs=None):
        """(train_ds, validation_ds): the training app's in-memory pipeline on the split."""
        from sngm_keras.data.pipeline import in_memory_datasets

        mean, std = self._normalization
        return in_memory_datasets(
            self.splits, mean=mean, std=std, pad=self._pad, batch_size=batch_size,
            eval_batch_size=min(self.config.eval_batch_size, self.num_validation), augment=self.config.augment,
            seed=self.config.seed, start_epoch=start_epoch, num_epochs=num_epochs or self.config.epochs,
        )

    # -- the hypermodel -----------------------------------------------------

    def trial_config(self, hp):
        """The `TrainConfig` of a trial: the base config with `hp`'s values."""
        values = self.space.fill(hp)
        epochs = int(hp.values.get("tuner/epochs", self.config.epochs))  # Hyperband's budget
        return dataclasses.replace(self.config, epochs=epochs, **values)

    def build(self, hp):
        import keras

        from sngm_keras.accumulation import MicroBatchModel
        from sngm_keras.models import build_model
        from sngm_keras.training.factory import compile_for_training

        config = self.trial_config(hp)
        keras.mixed_precision.set_dtype_policy(config.dtype_policy)
        keras.utils.set_random_seed(config.seed)
        net = build_model(config.model, self.splits.num_classes, tuple(self.splits.image_shape), seed=config.seed)
        # One micro-batch a step (no --micro_batch_size) has no noise scale to measure.
        model = MicroBatchModel(net, config.micro_batch_size or config.batch_size,
                                noise_scale=config.noise_scale and config.micro_batch_size is not None)
        # The optimizer is built too, so Hyperband's continued trials restore it.
        return compile_for_training(model, config, self.steps_per_epoch(config.batch_size))

    def fit(self, hp, model, *args, epochs=None, initial_epoch=0, callbacks=None, verbose=1, **kwargs):
        if args or kwargs.keys() - {"shuffle"}:
            raise TypeError("LargeBatchHyperModel reads its own data: call search() without data or fit arguments")
        config = self.trial_config(hp)
        epochs = int(epochs or config.epochs)
        train_ds, validation_ds = self.datasets(config.batch_size, start_epoch=initial_epoch, num_epochs=epochs)
        return model.fit(
            train_ds, epochs=epochs, initial_epoch=initial_epoch,
            steps_per_epoch=self.steps_per_epoch(config.batch_size), validation_data=validation_ds,
            callbacks=callbacks, verbose=verbose, shuffle=False,
        )

    def settings(self):
        """What decides the search's results, keyed by apps.tune flag names (for resume checks)."""
        fields = self.config.result_fields()
        for name in HYPERPARAMETERS + ("preset",):
            fields.pop(name, None)
        fields["epochs_per_trial"] = fields.pop("epochs")
        fields.update(self.space.to_dict(), validation_fraction=self.validation_fraction)
        return fields


# -- tuners ------------------------------------------------------------------


class _SearchTuner:
    """Times each trial into its metrics and rewrites the reports after each trial."""

    final_epochs = None
    write_reports_after_trials = True

    def on_trial_begin(self, trial):
        self._trial_started = time.perf_counter()
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        seconds = time.perf_counter() - getattr(self, "_trial_started", time.perf_counter())
        metrics = self.oracle.trials[trial.trial_id].metrics
        metrics.metrics.pop(WALL_SECONDS, None)  # a retried trial: its last run
        metrics.register(WALL_SECONDS, direction="min")
        metrics.update(WALL_SECONDS, seconds)
        try:
            super().on_trial_end(trial)  # raises RuntimeError after too many failed trials in a row
        finally:
            if self.write_reports_after_trials:
                write_reports(self, final_epochs=self.final_epochs)


class RandomSearchTuner(_SearchTuner, keras_tuner.RandomSearch):
    pass


class BayesianTuner(_SearchTuner, keras_tuner.BayesianOptimization):
    pass


class HyperbandTuner(_SearchTuner, keras_tuner.Hyperband):
    pass


def check_search_options(tuner, max_trials, objective):
    if tuner not in TUNERS:
        raise ConfigError("tuner", f"unknown {tuner!r}; choose one of {', '.join(TUNERS)}")
    if tuner == "bayesian":
        try:  # what keras_tuner.BayesianOptimization imports
            import scipy.optimize  # noqa: F401
            import sklearn.gaussian_process  # noqa: F401
        except ImportError as error:
            raise ConfigError(
                "tuner", f"bayesian needs scikit-learn and scipy ({error}): pip install 'keras-tuner[bayesian]', "
                "or use --tuner=random or hyperband"
            ) from None
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ConfigError("max_trials", f"must be a positive integer, got {max_trials!r}")
    if objective not in OBJECTIVES:
        why = (
            "; the test split is never used to select hyperparameters (its accuracy would be optimistic)"
            if str(objective).startswith("test") else ""
        )
        raise ConfigError("objective", f"unknown {objective!r}; choose one of {', '.join(OBJECTIVES)}{why}")


def claim_search(project_dir, settings):
    """Records `settings` in project_dir/search.json, or checks they match those there."""
    path = os.path.join(project_dir, SETTINGS_FILE)
    wanted = json.loads(json.dumps(settings))
    if os.path.exists(path):
        recorded = read_json(path)
        keys = differences(recorded, wanted)
        if keys:
            raise ConfigError(
                "project_name",
                f"{project_dir} holds a search with other settings ({describe_differences(recorded, wanted, keys, _show)}"
                "); use another --project_name, or --overwrite to discard it",
            )
        return False
    if os.path.isdir(project_dir) and os.listdir(project_dir):
        raise ConfigError(
            "project_name", f"{project_dir} holds files of an unknown search ({sorted(os.listdir(project_dir))[0]}); "
            "use another --project_name, or --overwrite to discard it"
        )
    try:
        os.makedirs(project_dir, exist_ok=True)
        write_atomic(path, json.dumps(wanted, indent=2, sort_keys=True))
    except OSError as error:
        raise ConfigError("directory", f"cannot write {project_dir} ({error.strerror or error})") from None
    return True


def _show(value):
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return repr(value)


def make_tuner(hypermodel, tuner="random", *, max_trials, directory, project_name, objective="val_accuracy",
               overwrite=False, final_epochs=None):
    """A Keras Tuner on <directory>/<project_name>/ that resumes the search there.

    `overwrite=True` deletes that folder first (a new search); otherwise an
    existing search resumes, if its settings are those of `hypermodel`,
    `tuner` and `objective` (`max_trials` may grow). The oracle is seeded
    with `hypermodel.config.seed + 1` (Keras Tuner takes 0 for "random").
    `final_epochs` is the --epochs of the best.flags the reports write
    (default: the trials' epochs).
    """
    check_search_options(tuner, max_trials, objective)
    if final_epochs is not None and (isinstance(final_epochs, bool) or not isinstance(final_epochs, int)
                                     or final_epochs < 1):
        raise ConfigError("final_epochs", f"must be a positive integer, got {final_epochs!r}")
    if not project_name or os.sep in project_name or project_name in (".", ".."):
        raise ConfigError("project_name", f"must be a plain folder name, got {project_name!r}")
    project_dir = os.path.join(directory, project_name)
    if os.path.exists(project_dir) and not os.path.isdir(project_dir):
        raise ConfigError("project_name", f"{project_dir} exists and is not a folder")
    if overwrite and os.path.isdir(project_dir):
        shutil.rmtree(project_dir)
    claim_search(project_dir, dict(hypermodel.settings(), tuner=tuner, objective=objective))

    common = dict(
        hypermodel=hypermodel, objective=keras_tuner.Objective(objective, OBJECTIVES[objective]),
        directory=directory, project_name=project_name, overwrite=False, seed=hypermodel.config.seed + 1,
    )
    if tuner == "random":
        result = RandomSearchTuner(max_trials=max_trials, **common)
    elif tuner == "bayesian":
        result = BayesianTuner(max_trials=max_trials, **common)
    else:
        # Successive halving up to epochs_per_trial; brackets repeat until max_trials.
        result = HyperbandTuner(max_epochs=hypermodel.config.epochs, hyperband_iterations=None, **common)
    result.oracle.max_trials = max_trials  # not part of the oracle's saved state: a resume may raise it
    result.final_epochs = final_epochs
    recover_interrupted(result.oracle)
    # Keras Tuner reloads a search only once tuner0.json exists, which it
    # first writes after a trial ended: a kill just before that would start
    # the search afresh.
    result.save()
    return result


def recover_interrupted(oracle):
    """Makes the trial files the truth after a kill.

    Keras Tuner writes a trial's trial.json and then oracle.json. Killed in
    between, a finished trial is still listed as running in oracle.json (and
    the reload would run it again), or a trial just started is missing from
    oracle.json (and would never run, yet count toward max_trials). Finished
    trials leave the retry queue; started, unfinished ones join it.
    """
    queue = [i for i in oracle._retry_queue if oracle.trials[i].status not in ("COMPLETED", "FAILED")]
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        if trial_id not in oracle.start_order:
            oracle.start_order.append(trial_id)
        if trial.status in ("COMPLETED", "FAILED") and trial_id not in oracle.end_order:
            oracle.end_order.append(trial_id)
        running = trial.status == "RUNNING" and trial not in oracle.ongoing_trials.values()
        if running and trial_id not in queue:
            queue.append(trial_id)
    oracle._retry_queue = queue


# -- reports -----------------------------------------------------------------


def best_trial(tuner):
    """The completed trial with the best score, or None (Keras Tuner's
    get_best_trials falls back to unfinished ones)."""
    oracle = tuner.oracle
    scored = [t for t in oracle.trials.values()
              if t.status == "COMPLETED" and t.score is not None and not math.isnan(t.score)]
    if not scored:
        return None
    pick = max if oracle.objective.direction == "max" else min
    return pick(scored, key=lambda t: t.score)


def trial_rows(tuner):
    """One dict per trial, in the order they started: trial, status, the
    hyperparameters, epochs, score (the objective), wall_seconds, best, and
    error (the last line of a failed trial's error, else None)."""
    oracle = tuner.oracle
    best = best_trial(tuner)
    best_id = best.trial_id if best else None
    rows = []
    for trial_id in oracle.start_order:
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        row = {"trial": trial_id, "status": trial.status}
        row.update({name: values.get(name) for name in HYPERPARAMETERS})
        row["epochs"] = values.get("tuner/epochs", tuner.hypermodel.config.epochs)
        row["score"] = trial.score
        wall = trial.metrics.get_best_value(WALL_SECONDS) if trial.metrics.exists(WALL_SECONDS) else None
        row[WALL_SECONDS] = None if wall is None else float(wall)
        row["best"] = trial_id == best_id
        lines = [line for line in (trial.message or "").splitlines() if line.strip()]
        row["error"] = lines[-1].strip() if lines and trial.status != "COMPLETED" else None
        rows.append(row)
    return rows


def _cell(value, key=None):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "*" if value else ""
    if key == WALL_SECONDS:
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows, objective):
    columns = ["trial", "status", *HYPERPARAMETERS, "epochs", "score", WALL_SECONDS, "best"]
    header = [objective if c == "score" else c for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c], c) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def best_config(tuner, final_epochs=None):
    """The `TrainConfig` to train the best trial's hyperparameters with apps.train, or None.

    Its model_dir is best_trial_<id>/ in the search's folder, its epochs
    `final_epochs` (default: the trials' epochs).
    """
    trial = best_trial(tuner)
    if trial is None:
        return None
    hypermodel = tuner.hypermodel
    config = hypermodel.trial_config(trial.hyperparameters.copy())
    return dataclasses.replace(
        config, epochs=final_epochs or hypermodel.config.epochs,
        micro_batch_size=config.micro_batch_size or config.batch_size,
        model_dir=os.path.abspath(os.path.join(tuner.project_dir, f"best_trial_{trial.trial_id}")),
    )


def write_reports(tuner, final_epochs=None):
    """Writes trials.csv, trials.md and (once a trial completed) best.flags into
    the search's folder; returns {"csv", "md", "flags"} paths (flags None
    when no trial completed)."""
    project_dir = tuner.project_dir
    objective = tuner.oracle.objective.name
    rows = trial_rows(tuner)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["trial"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    paths = {"csv": os.path.join(project_dir, TRIALS_CSV), "md": os.path.join(project_dir, TRIALS_MD), "flags": None}
    write_atomic(paths["csv"], out.getvalue())
    write_atomic(paths["md"], markdown_table(rows, objective))
    config = best_config(tuner, final_epochs)
    if config is not None:
        best = next(r for r in rows if r["best"])
        header = [
            f"Best trial {best['trial']} of the search in {os.path.abspath(project_dir)}:",
            f"{objective} {best['score']:.4f} on the {tuner.hypermodel.num_validation} held-out training images,"
            f" {best['epochs']} epoch(s) on {tuner.hypermodel.num_train} images.",
            f"Train it: python -m apps.train --flagfile={os.path.abspath(os.path.join(project_dir, FLAGFILE))}",
        ]
        paths["flags"] = os.path.join(project_dir, FLAGFILE)
        write_atomic(paths["flags"], flagfile_text(config, header))
    return paths
