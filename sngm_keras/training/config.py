"""`TrainConfig`: everything a training run depends on, validated up front.

Field names are the training app's flag names, so a `ConfigError` names the
flag at fault. Validation runs before any data is read or model built.
"""

import dataclasses
import hashlib
import json
import numbers
import os
import sys

from sngm_keras import checks
from sngm_keras.training.dataset_fields import (  # noqa: F401 - DATASETS, TFDS_DATASETS: the apps take them from here
    DATASETS,
    TFDS_DATASETS,
    check_dataset_fields,
    ignored_dataset_fields,
)
from sngm_keras.training.errors import ConfigError, as_config_errors
from sngm_keras.training.presets import PRESETS

OPTIMIZERS = ("sngm", "msgd", "lars")
SCHEDULES = ("poly", "step", "constant")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")

# Fields that do not change what a run computes: a run may be resumed with
# other values of these.
JAX_CLUSTER_FIELDS = ("coordinator_address", "num_processes", "process_id")
NOT_RESULT_FIELDS = (
    "model_dir",
    "verbose",
    "download",
    "data_dir",
    "max_updates",
    "noise_scale",
    "checkpoint_every",
    "keep_checkpoints",
    *JAX_CLUSTER_FIELDS,
)
# Not a setting: which named configuration the values came from.
NOT_SETTINGS = NOT_RESULT_FIELDS + ("preset",)
VERBOSITY = (0, 1, 2)
# Whole-number fields end up in int32 tensors or seeds; larger values are typos.
INT_LIMIT = 2**31 - 1
MAX_CPU_DEVICES = 256
# A few checkpoints within each epoch of ResNet-20 at B = 128 (351 updates),
# each costing well under 1% of the training time in between (see README's
# Resume section for the measurement).
DEFAULT_CHECKPOINT_EVERY = 100
# Settings added after runs were named by their digest: left out of it at
# these values, so that the runs before them keep their folders' names.
ADDED_SETTINGS = {"stream": False, "skip_bad_images": False}


@dataclasses.dataclass
class TrainConfig:
    dataset: str = "sample"
    data_dir: str | None = None
    download: bool = False
    model: str = "twoconv"
    optimizer: str = "sngm"
    batch_size: int = 500
    micro_batch_size: int | None = None
    learning_rate: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    trust_coefficient: float = 0.001
    pytorch_lars: bool = False
    lr_schedule: str = "poly"
    power: float = 1.1
    decay_epochs: tuple[int, ...] = (80, 120)
    decay_factor: float = 10.0
    warmup_epochs: int = 0
    warmup_learning_rate: float = 0.0
    epochs: int = 30
    max_updates: int | None = None
    strategy: str = "auto"
    num_cpu_devices: int = 0
    model_dir: str = "runs/demo"
    seed: int = 0
    augment: bool = True
    deterministic: bool = False
    jit_compile: bool = False
    dtype_policy: str = "float32"
    eval_every: int = 1
    eval_batch_size: int = 1000
    validation_size: int = 0
    validations_per_epoch: int = 1
    image_size: int | None = None
    # Image folders: stream them from their files even when they would fit in
    # memory; leave out the files that do not decode instead of stopping.
    stream: bool = False
    skip_bad_images: bool = False
    verbose: int | None = None  # Keras' fit verbosity; None: 1 on a terminal, else 2
    # --strategy=multi_worker on JAX (see sngm_keras.training.cluster)
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    preset: str | None = None
    # Measure the gradient noise scale (it never changes the weights).
    noise_scale: bool = True
    # A checkpoint every this many updates within epochs (0: at epoch ends only;
    # None: every DEFAULT_CHECKPOINT_EVERY, where the run is that long), and
    # how many of those are kept besides the last epoch's.
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2

    def updates_between_checkpoints(self):
        """`checkpoint_every`, its default filled in."""
        return DEFAULT_CHECKPOINT_EVERY if self.checkpoint_every is None else self.checkpoint_every

    @classmethod
    def from_preset(cls, preset, **overrides):
        """Defaults, then the preset's values, then `overrides`."""
        if preset is not None and preset not in PRESETS:
            raise ConfigError("preset", f"unknown preset {preset!r}; see --helpfull or sngm_keras.training.PRESETS")
        values = dict(PRESETS.get(preset, {}))
        values.update(overrides)
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(sorted(unknown)[0], "not a TrainConfig field")
        if "decay_epochs" in values:
            values["decay_epochs"] = tuple(int(e) for e in values["decay_epochs"])
        return cls(preset=preset, **values)

    def to_dict(self):
        values = dataclasses.asdict(self)
        values["decay_epochs"] = list(self.decay_epochs)
        return values

    def result_fields(self):
        """The fields that decide what the run computes (for resume checks)."""
        return {k: v for k, v in self.to_dict().items() if k not in NOT_SETTINGS}

    def settings_digest(self):
        """A short hash of `result_fields()`: equal for equal settings."""
        fields = {k: v for k, v in self.result_fields().items() if k not in ADDED_SETTINGS or ADDED_SETTINGS[k] != v}
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def ignored_fields(self):
        """Fields this configuration does not use, each with why (a schedule's
        parameter under another schedule, LARS' coefficient for SNGM, ...).
        Setting one of them explicitly is a mistake the apps refuse."""
        schedule = f"--lr_schedule={self.lr_schedule}"
        ignored = {}
        if self.lr_schedule != "poly":
            for name in ("power", "warmup_epochs", "warmup_learning_rate"):
                ignored[name] = f"applies to --lr_schedule=poly only, not {schedule}"
        elif not self.warmup_epochs:
            ignored["warmup_learning_rate"] = "applies with --warmup_epochs > 0 only"
        if self.lr_schedule != "step":
            for name in ("decay_epochs", "decay_factor"):
                ignored[name] = f"applies to --lr_schedule=step only, not {schedule}"
        if self.optimizer != "lars":
            ignored["trust_coefficient"] = f"applies to --optimizer=lars only, not --optimizer={self.optimizer}"
        if not self.validation_size:
            ignored["validations_per_epoch"] = "applies with --validation_size > 0 only"
        if self.checkpoint_every == 0:
            ignored["keep_checkpoints"] = "applies with --checkpoint_every > 0 only"
        return {**ignored, **ignored_dataset_fields(self)}

    @as_config_errors()
    def validate(self):
        """Raises ConfigError for the first bad field; returns self."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, numbers.Number) and hasattr(value, "item"):
                # A NumPy scalar: the checks take it as a number, config.json needs Python's.
                value = value.item()
                setattr(self, field.name, value)
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_LIMIT:
                raise ConfigError(field.name, f"must be at most {INT_LIMIT}, got {value}")
        check_dataset_fields(self)
        from sngm_keras.model_names import MODEL_NAMES

        checks.check_choice("model", self.model, MODEL_NAMES)
        checks.check_choice("optimizer", self.optimizer, OPTIMIZERS)
        checks.check_choice("lr_schedule", self.lr_schedule, SCHEDULES)
        checks.check_choice("strategy", self.strategy, STRATEGIES)
        checks.check_choice("dtype_policy", self.dtype_policy, DTYPE_POLICIES)
        checks.check_positive_int("batch_size", self.batch_size)
        if self.micro_batch_size is not None:
            checks.check_batch_split(self.batch_size, self.micro_batch_size, name="micro_batch_size")
        checks.check_positive("learning_rate", self.learning_rate)
        checks.check_range("momentum", self.momentum, 0, 1)
        checks.check_range("weight_decay", self.weight_decay, 0)
        checks.check_positive("trust_coefficient", self.trust_coefficient)
        if self.pytorch_lars and self.optimizer != "lars":
            raise ConfigError("pytorch_lars", f"applies to --optimizer=lars, not {self.optimizer}")
        checks.check_positive("power", self.power)
        checks.check_positive("decay_factor", self.decay_factor)
        checks.check_positive_int("epochs", self.epochs)
        if self.max_updates is not None:
            checks.check_positive_int("max_updates", self.max_updates)
        checks.check_int("warmup_epochs", self.warmup_epochs, 0, self.epochs - 1)
        checks.check_range("warmup_learning_rate", self.warmup_learning_rate, 0)
        if self.lr_schedule == "step":
            epochs = list(self.decay_epochs)
            if not epochs or epochs != sorted(set(epochs)) or not all(0 < e < self.epochs for e in epochs):
                raise ConfigError(
                    "decay_epochs", f"must be increasing epochs inside (0, --epochs={self.epochs}), got {epochs}"
                )
        if self.warmup_epochs and self.lr_schedule != "poly":
            raise ConfigError("warmup_epochs", "warm-up is implemented for --lr_schedule=poly only")
        checks.check_int("num_cpu_devices", self.num_cpu_devices, 0, MAX_CPU_DEVICES)
        if self.num_cpu_devices > 1 and self.strategy not in ("auto", "mirrored"):
            raise ConfigError("num_cpu_devices", f"splits the CPU for --strategy=mirrored, not {self.strategy}")
        checks.check_positive_int("eval_every", self.eval_every)
        checks.check_positive_int("eval_batch_size", self.eval_batch_size)
        checks.check_non_negative_int("validation_size", self.validation_size)
        if self.validation_size and self.dataset == "imagenet2012":
            raise ConfigError(
                "validation_size",
                "holds training images out of in-memory datasets; imagenet2012 is streamed from files",
            )
        checks.check_positive_int("validations_per_epoch", self.validations_per_epoch)
        if self.checkpoint_every is not None:
            checks.check_int("checkpoint_every", self.checkpoint_every, 0, INT_LIMIT)
        checks.check_int("keep_checkpoints", self.keep_checkpoints, 1, INT_LIMIT)
        if self.validations_per_epoch > 1 and not self.validation_size:
            raise ConfigError("validations_per_epoch", "needs a validation split: set --validation_size")
        if self.verbose is not None:
            checks.check_choice("verbose", self.verbose, VERBOSITY)
        checks.check_int("seed", self.seed, 0, INT_LIMIT)
        if not _check_cluster(self):
            return self  # a worker that is not the chief keeps no files: model_dir is the chief's
        _check_model_dir(self.model_dir)
        return self


def _check_cluster(config):
    """Raises ConfigError for a bad cluster description; False on a worker
    that is not the chief of a multi_worker run."""
    from sngm_keras.training import cluster

    backend = keras_backend()
    for field in JAX_CLUSTER_FIELDS:
        if getattr(config, field) is not None and (config.strategy != "multi_worker" or backend != "jax"):
            raise ConfigError(field, "applies to --strategy=multi_worker on the jax backend")
    described = cluster.describe(config, backend)
    return described is None or described.is_chief


def keras_backend():
    """Keras' backend, without importing Keras (which imports the backend):
    KERAS_BACKEND, else the "backend" of keras.json in KERAS_HOME (default
    ~/.keras), else tensorflow, as keras/src/backend/config.py decides."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    backend = os.environ.get("KERAS_BACKEND")
    if backend:
        return backend
    if "KERAS_HOME" in os.environ:
        home = os.environ["KERAS_HOME"]
    else:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    try:
        with open(os.path.expanduser(os.path.join(home, "keras.json"))) as file:
            backend = json.load(file).get("backend")
    except (OSError, ValueError, AttributeError):
        backend = None
    return backend or "tensorflow"


def keras_verbosity(verbose):
    """Keras' `fit` verbosity for a configured one: None means a progress bar
    on a terminal and one line per epoch otherwise (a bar's control codes
    fill a log file)."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def _check_model_dir(model_dir):
    """Checks without writing: the folder is created when the run claims it
    (`RunDir.claim`), which turns a refusal of the file system into a
    ConfigError too."""
    if not model_dir:
        raise ConfigError("model_dir", "must not be empty")
    path = os.path.abspath(os.path.expanduser(model_dir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError("model_dir", f"{model_dir} exists and is not a folder")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError("model_dir", f"{model_dir} cannot be created: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError("model_dir", f"{model_dir} is not writable")
