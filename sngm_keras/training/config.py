"""`TrainConfig`: everything a training run depends on, validated once, up front.

Field names are the training app's flag names, and each field's help text is
its flag's (`help_of`), so a `ConfigError` names the flag at fault and the
apps derive their flags from the fields. A config is frozen: `validate()`
checks it once (a copy made with `dataclasses.replace` is checked again), and
`train()` uses the checked one, with the cluster it described. Validation
runs before any data is read or model built.
"""

import dataclasses
import hashlib
import json
import numbers

from sngm_keras import checks
from sngm_keras.batch_growth import check_growth_settings
from sngm_keras.dataset_names import DATASETS
from sngm_keras.training.config_checks import check_model_dir, keras_backend
from sngm_keras.training.dataset_fields import check_dataset_fields, ignored_dataset_fields
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
_JAX_CLUSTER = "--strategy=multi_worker on JAX"


def _field(default, help):
    return dataclasses.field(default=default, metadata={"help": help})


def help_of(name):
    """The help text of TrainConfig's field `name` (its flag's)."""
    return TrainConfig.__dataclass_fields__[name].metadata["help"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    dataset: str = _field("sample", f"{', '.join(DATASETS)}, or a folder with train/ and test/ of class folders.")
    data_dir: str | None = _field(None, "TFDS data_dir (prepared or download target).")
    download: bool = _field(False, "Let TFDS download the dataset.")
    model: str = _field("twoconv", "resnet20/32/44/56/110, resnet18/34/50, or twoconv.")
    optimizer: str = _field("sngm", "sngm, msgd or lars.")
    batch_size: int = _field(500, "Effective batch size B (examples per parameter update).")
    micro_batch_size: int | None = _field(
        None, "Examples per forward/backward pass and replica (default: B / replicas)."
    )
    learning_rate: float = _field(0.2, "Initial learning rate.")
    momentum: float = _field(0.9, "Momentum beta in [0, 1).")
    weight_decay: float = _field(5e-4, "L2 weight decay added to the gradient.")
    trust_coefficient: float = _field(0.001, "LARS trust coefficient eta.")
    pytorch_lars: bool = _field(
        False,
        "LARS as the pytorch-lars code: every variable adapted and decayed, zero-norm variables frozen (default: "
        "biases and BatchNorm excluded).",
    )
    lr_schedule: str = _field("poly", "poly, step or constant.")
    power: float = _field(1.1, "Power of the poly schedule.")
    decay_epochs: tuple[int, ...] = _field((80, 120), "Epochs where --lr_schedule=step divides the rate.")
    decay_factor: float = _field(10.0, "What --lr_schedule=step divides the rate by.")
    warmup_epochs: int = _field(0, "Linear warm-up epochs (poly schedule).")
    warmup_learning_rate: float = _field(0.0, "Learning rate the warm-up starts from.")
    epochs: int = _field(30, "Epochs to train.")
    max_updates: int | None = _field(None, "Stop after this many parameter updates.")
    strategy: str = _field("auto", "auto, one_device, mirrored or multi_worker.")
    num_cpu_devices: int = _field(0, "Split the CPU into N logical devices (for mirrored).")
    model_dir: str = _field("runs/demo", "Where checkpoints and results go.")
    seed: int = _field(0, "Seed of initialization, data order and augmentation.")
    augment: bool = _field(True, "Training augmentation.")
    deterministic: bool = _field(False, "Deterministic TensorFlow ops (bit-identical resumes).")
    jit_compile: bool = _field(False, "XLA: the whole step on one device, the micro-batch loop under a strategy.")
    dtype_policy: str = _field("float32", "float32, mixed_float16 or mixed_bfloat16.")
    eval_every: int = _field(1, "Evaluate on the test split every N epochs.")
    eval_batch_size: int = _field(1000, "Batch size of evaluation.")
    validation_size: int = _field(
        0, "Hold this many training images out (a fixed random subset) as a validation split."
    )
    validations_per_epoch: int = _field(1, "Evaluate the validation split this many times per epoch (validation.csv).")
    image_size: int | None = _field(
        None,
        "Side of the square images trained on: imagenet2012 (default 224) and image folders streamed from their "
        "files (default: the images' own size when they all have one, else 224 for the ImageNet ResNets).",
    )
    stream: bool = _field(
        False,
        "--dataset=DIR: stream the images from their files with ImageNet's random-resized crops even when they "
        "have one size and fit in memory (images of different sizes are always streamed).",
    )
    skip_bad_images: bool = _field(False, "--dataset=DIR: leave out the files that do not decode instead of stopping.")
    verbose: int | None = _field(
        None,
        "Keras progress: 0 silent, 1 a progress bar, 2 a line per epoch (default: 1 on a terminal, 2 when the "
        "output goes to a file or pipe).",
    )
    # --strategy=multi_worker on JAX (see sngm_keras.training.cluster)
    coordinator_address: str | None = _field(
        None, f"{_JAX_CLUSTER}: process 0's host:port (else KERAS_DISTRIBUTION_JOB_ADDRESSES)."
    )
    num_processes: int | None = _field(
        None, f"{_JAX_CLUSTER}: the number of processes (else KERAS_DISTRIBUTION_NUM_PROCESSES)."
    )
    process_id: int | None = _field(
        None, f"{_JAX_CLUSTER}: this process's id, 0 the chief (else KERAS_DISTRIBUTION_PROCESS_ID)."
    )
    preset: str | None = _field(None, "A named configuration (sngm_keras.training.PRESETS).")
    # It never changes the weights.
    noise_scale: bool = _field(True, "Measure the gradient noise scale B_simple (needs 2+ micro-batches a step).")
    checkpoint_every: int | None = _field(
        None,
        "Also checkpoint every N updates within epochs, to resume there exactly (0: at epoch ends only; default: "
        f"every {DEFAULT_CHECKPOINT_EVERY} where the run is that long). SIGTERM and Ctrl-C checkpoint the update "
        "they stop at in any case.",
    )
    keep_checkpoints: int = _field(2, "How many checkpoints within epochs to keep, besides the last epoch's.")
    # Batch growth (sngm_keras.batch_growth): --batch_size is the first batch.
    batch_growth: str = _field(
        "none",
        "none, or noise_scale: at each epoch's end the next epoch's batch becomes --batch_growth_factor x the "
        "measured gradient noise scale B_simple, rounded down to micro-batch x replicas x 2^k, within "
        "[--batch_size, --max_batch_size], never smaller than the current one; every epoch trains on the same "
        "examples, in micro-batches of --micro_batch_size.",
    )
    max_batch_size: int | None = _field(None, "The largest batch --batch_growth may reach (default: an epoch's).")
    batch_growth_factor: float = _field(1.0, "--batch_growth's target batch is this factor x B_simple.")
    lr_batch_scaling: str = _field(
        "none",
        "As --batch_growth grows B from B0: the rate times (B / B0)^k, k = 0 (none), 1/2 (sqrt) or 1 (linear). "
        "The schedule counts in examples in any case. none: the batch-scaling study found each optimizer's best "
        "rate nearly flat in B (fitted k -0.15 to 0.15).",
    )

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, numbers.Number) and hasattr(value, "item"):
                # A NumPy scalar: the checks take it as a number, config.json needs Python's.
                object.__setattr__(self, field.name, value.item())
        if not isinstance(self.decay_epochs, tuple):
            object.__setattr__(self, "decay_epochs", tuple(self.decay_epochs))

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
        if self.batch_growth == "none":
            for name in ("max_batch_size", "batch_growth_factor", "lr_batch_scaling"):
                ignored[name] = "applies with --batch_growth=noise_scale only"
        return {**ignored, **ignored_dataset_fields(self)}

    def validate(self):
        """Raises ConfigError for the first bad field; returns self. Checks
        once: a config is frozen, so a second call has nothing new to see."""
        if "_cluster" not in self.__dict__:
            object.__setattr__(self, "_cluster", self._check())
        return self

    def cluster(self):
        """This process's `cluster.Cluster` under --strategy=multi_worker
        (None otherwise), as validation described it."""
        return self.validate()._cluster

    @as_config_errors()
    def _check(self):
        """Checks every field; returns the described cluster."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
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
        growth = ("batch_growth", "batch_size", "micro_batch_size", "max_batch_size", "batch_growth_factor")
        check_growth_settings(*(getattr(self, n) for n in growth), self.lr_batch_scaling, self.noise_scale)
        described = _describe_cluster(self)
        if described is None or described.is_chief:
            check_model_dir(self.model_dir)  # a worker that is not the chief keeps no files
        return described


def _describe_cluster(config):
    """The `cluster.Cluster` of `config` (None unless multi_worker); raises
    ConfigError for a bad cluster description."""
    from sngm_keras.training import cluster

    backend = keras_backend()
    for field in JAX_CLUSTER_FIELDS:
        if getattr(config, field) is not None and (config.strategy != "multi_worker" or backend != "jax"):
            raise ConfigError(field, "applies to --strategy=multi_worker on the jax backend")
    return cluster.describe(config, backend)
