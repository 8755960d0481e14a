"""`TrainConfig`: everything a training run depends on, validated up front.

Field names are the training app's flag names, so a `ConfigError` names the
flag at fault. Validation runs before any data is read or model built.
"""

import dataclasses
import hashlib
import json
import math
import os
import sys
from typing import Optional, Tuple

from sngm_keras.training.errors import ConfigError
from sngm_keras.training.presets import PRESETS

DATASETS = ("sample", "cifar10", "cifar100", "imagenet2012")
TFDS_DATASETS = DATASETS[1:]
OPTIMIZERS = ("sngm", "msgd", "lars")
SCHEDULES = ("poly", "step", "constant")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
DTYPE_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")

# Fields that do not change what a run computes: a run may be resumed with
# other values of these.
JAX_CLUSTER_FIELDS = ("coordinator_address", "num_processes", "process_id")
NOT_RESULT_FIELDS = ("model_dir", "verbose", "download", "data_dir", "max_updates", "noise_scale",
                     *JAX_CLUSTER_FIELDS)
# Not a setting: which named configuration the values came from.
NOT_SETTINGS = NOT_RESULT_FIELDS + ("preset",)
VERBOSITY = (0, 1, 2)
# Whole-number fields end up in int32 tensors or seeds; larger values are typos.
INT_LIMIT = 2**31 - 1
MAX_CPU_DEVICES = 256


@dataclasses.dataclass
class TrainConfig:
    dataset: str = "sample"
    data_dir: Optional[str] = None
    download: bool = False
    model: str = "twoconv"
    optimizer: str = "sngm"
    batch_size: int = 500
    micro_batch_size: Optional[int] = None
    learning_rate: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    trust_coefficient: float = 0.001
    pytorch_lars: bool = False
    lr_schedule: str = "poly"
    power: float = 1.1
    decay_epochs: Tuple[int, ...] = (80, 120)
    decay_factor: float = 10.0
    warmup_epochs: int = 0
    warmup_learning_rate: float = 0.0
    epochs: int = 30
    max_updates: Optional[int] = None
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
    image_size: Optional[int] = None
    verbose: Optional[int] = None  # Keras' fit verbosity; None: 1 on a terminal, else 2
    # --strategy=multi_worker on JAX (see sngm_keras.training.cluster)
    coordinator_address: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None
    preset: Optional[str] = None
    # Measure the gradient noise scale (it never changes the weights).
    noise_scale: bool = True

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
        text = json.dumps(self.result_fields(), sort_keys=True)
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
        if self.dataset != "imagenet2012":
            ignored["image_size"] = "applies to --dataset=imagenet2012 only"
        if not self.validation_size:
            ignored["validations_per_epoch"] = "applies with --validation_size > 0 only"
        if self.dataset not in TFDS_DATASETS:
            for name in ("data_dir", "download"):
                ignored[name] = f"applies to the TFDS datasets ({', '.join(TFDS_DATASETS)}) only"
        return ignored

    def validate(self):
        """Raises ConfigError for the first bad field; returns self."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_LIMIT:
                raise ConfigError(field.name, f"must be at most {INT_LIMIT}, got {value}")
        _check_dataset(self.dataset, self.data_dir)
        from sngm_keras.models import MODEL_NAMES

        _choice("model", self.model, MODEL_NAMES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr_schedule", self.lr_schedule, SCHEDULES)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("dtype_policy", self.dtype_policy, DTYPE_POLICIES)
        _positive_int("batch_size", self.batch_size)
        if self.micro_batch_size is not None:
            _positive_int("micro_batch_size", self.micro_batch_size)
            if self.batch_size % self.micro_batch_size:
                raise ConfigError(
                    "micro_batch_size",
                    f"{self.micro_batch_size} does not divide --batch_size={self.batch_size}",
                )
        _positive("learning_rate", self.learning_rate)
        if not 0 <= _number("momentum", self.momentum) < 1:
            raise ConfigError("momentum", f"must be in [0, 1), got {self.momentum}")
        if _number("weight_decay", self.weight_decay) < 0:
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay}")
        _positive("trust_coefficient", self.trust_coefficient)
        if self.pytorch_lars and self.optimizer != "lars":
            raise ConfigError("pytorch_lars", f"applies to --optimizer=lars, not {self.optimizer}")
        _positive("power", self.power)
        _positive("decay_factor", self.decay_factor)
        _positive_int("epochs", self.epochs)
        if self.max_updates is not None:
            _positive_int("max_updates", self.max_updates)
        if not isinstance(self.warmup_epochs, int) or not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError("warmup_epochs", f"must be in [0, --epochs={self.epochs}), got {self.warmup_epochs}")
        if _number("warmup_learning_rate", self.warmup_learning_rate) < 0:
            raise ConfigError("warmup_learning_rate", f"must be >= 0, got {self.warmup_learning_rate}")
        if self.lr_schedule == "step":
            epochs = list(self.decay_epochs)
            if not epochs or epochs != sorted(set(epochs)) or not all(0 < e < self.epochs for e in epochs):
                raise ConfigError(
                    "decay_epochs", f"must be increasing epochs inside (0, --epochs={self.epochs}), got {epochs}"
                )
        if self.warmup_epochs and self.lr_schedule != "poly":
            raise ConfigError("warmup_epochs", "warm-up is implemented for --lr_schedule=poly only")
        if not isinstance(self.num_cpu_devices, int) or self.num_cpu_devices < 0:
            raise ConfigError("num_cpu_devices", f"must be >= 0, got {self.num_cpu_devices}")
        if self.num_cpu_devices > 1 and self.strategy not in ("auto", "mirrored"):
            raise ConfigError("num_cpu_devices", f"splits the CPU for --strategy=mirrored, not {self.strategy}")
        _positive_int("eval_every", self.eval_every)
        _positive_int("eval_batch_size", self.eval_batch_size)
        if isinstance(self.validation_size, bool) or not isinstance(self.validation_size, int) \
                or self.validation_size < 0:
            raise ConfigError("validation_size", f"must be a non-negative integer, got {self.validation_size!r}")
        if self.validation_size and self.dataset == "imagenet2012":
            raise ConfigError("validation_size", "holds training images out of in-memory datasets; "
                              "imagenet2012 is streamed from files")
        _positive_int("validations_per_epoch", self.validations_per_epoch)
        if self.validations_per_epoch > 1 and not self.validation_size:
            raise ConfigError("validations_per_epoch", "needs a validation split: set --validation_size")
        if self.verbose is not None and (self.verbose not in VERBOSITY or isinstance(self.verbose, bool)):
            raise ConfigError("verbose", f"must be 0, 1 or 2, got {self.verbose!r}")
        if self.num_cpu_devices > MAX_CPU_DEVICES:
            raise ConfigError("num_cpu_devices", f"must be at most {MAX_CPU_DEVICES}, got {self.num_cpu_devices}")
        if self.image_size is not None:
            _positive_int("image_size", self.image_size)
            if self.dataset != "imagenet2012":
                raise ConfigError("image_size", "applies to --dataset=imagenet2012 only")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= INT_LIMIT:
            raise ConfigError("seed", f"must be an integer in [0, {INT_LIMIT}], got {self.seed!r}")
        if not _check_cluster(self):
            return self  # a worker that is not the chief keeps no files: model_dir is the chief's
        _check_model_dir(self.model_dir)
        return self


def _check_cluster(config):
    """Raises ConfigError for a bad cluster description; False on a worker
    that is not the chief of a multi_worker run."""
    import keras

    from sngm_keras.training import cluster

    backend = keras.backend.backend()
    for field in JAX_CLUSTER_FIELDS:
        if getattr(config, field) is not None and (config.strategy != "multi_worker" or backend != "jax"):
            raise ConfigError(field, "applies to --strategy=multi_worker on the jax backend")
    described = cluster.describe(config, backend)
    return described is None or described.is_chief


def keras_verbosity(verbose):
    """Keras' `fit` verbosity for a configured one: None means a progress bar
    on a terminal and one line per epoch otherwise (a bar's control codes
    fill a log file)."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def _choice(field, value, choices):
    if value not in choices:
        raise ConfigError(field, f"unknown {value!r}; choose one of {', '.join(choices)}")


def _number(field, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(field, f"must be a finite number, got {value!r}")
    return value


def _positive(field, value):
    if not _number(field, value) > 0:
        raise ConfigError(field, f"must be > 0, got {value}")


def _positive_int(field, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(field, f"must be a positive integer, got {value!r}")


def _check_dataset(dataset, data_dir):
    if dataset in DATASETS:
        if data_dir is not None and not os.path.isdir(os.path.expanduser(data_dir)):
            raise ConfigError("data_dir", f"{data_dir} is not a folder")
        return
    path = os.path.expanduser(str(dataset))
    if not os.path.isdir(path):
        raise ConfigError(
            "dataset",
            f"unknown {dataset!r}; choose one of {', '.join(DATASETS)} or a folder holding train/ and test/",
        )
    for split in ("train", "test"):
        if not os.path.isdir(os.path.join(path, split)):
            raise ConfigError("dataset", f"folder {dataset} has no {split}/ sub-folder of class folders")


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
