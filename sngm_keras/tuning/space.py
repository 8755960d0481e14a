"""The hyperparameters searched and their ranges, and the search's options.

The search space (`SearchSpace`, defaults from the paper's settings at
B = 4096): the learning rate log-uniform in [0.1, 4], momentum beta one of
0.9, 0.95, 0.99, the poly schedule's power uniform in [1, 2], the weight decay
log-uniform in [1e-5, 1e-3], the batch size one of a list. A range whose two
ends are equal fixes that hyperparameter. The hyperparameters are named after
the training app's flags (learning_rate, momentum, power, weight_decay,
batch_size), and every other setting comes from the base `TrainConfig`.
Bad ranges raise `ConfigError` naming the apps.tune flag at fault.
"""

import dataclasses

from sngm_keras import checks
from sngm_keras.training.errors import ConfigError, as_config_errors

HYPERPARAMETERS = ("learning_rate", "momentum", "power", "weight_decay", "batch_size")

TUNERS = ("random", "bayesian", "hyperband")
# Scores on the validation split held out of the training images. Test-split
# objectives are deliberately absent: selecting on the test split makes its
# accuracy an optimistic estimate.
OBJECTIVES = {"val_accuracy": "max", "val_loss": "min"}

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

    @as_config_errors()
    def validate(self):
        """Raises ConfigError for the first bad field; returns self."""
        checks.check_interval("lr_range", self.lr_range, low=0, low_inclusive=False)
        checks.check_interval("power_range", self.power_range, low=0, low_inclusive=False)
        # Sampled log-uniformly, so above 0, unless fixed (0,0 fixes it at 0).
        wd_range = tuple(self.wd_range or ())
        checks.check_interval("wd_range", wd_range, low=0, low_inclusive=wd_range[:1] == wd_range[1:])
        checks.check_values(
            "momentum_choices", self.momentum_choices, lambda name, m: checks.check_range(name, m, 0, 1)
        )
        checks.check_values("batch_sizes", self.batch_sizes, checks.check_positive_int)
        return self

    @as_config_errors()
    def check_micro_batch(self, micro_batch_size):
        """Every batch size of the space is made of micro-batches of `micro_batch_size` (None: one a batch)."""
        if micro_batch_size:
            for batch_size in self.batch_sizes:
                checks.check_batch_split(batch_size, micro_batch_size, name="batch_sizes")

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


def _float(hp, name, bounds, log):
    low, high = (float(b) for b in bounds)
    if low == high:
        return hp.Fixed(name, low)
    return hp.Float(name, min_value=low, max_value=high, sampling="log" if log else "linear")


def _choice(hp, name, values):
    if len(values) == 1:
        return hp.Fixed(name, values[0])
    return hp.Choice(name, values)


@as_config_errors()
def check_search_options(tuner, max_trials, objective):
    checks.check_choice("tuner", tuner, TUNERS)
    if tuner == "bayesian":
        try:  # what keras_tuner.BayesianOptimization imports
            import scipy.optimize  # noqa: F401
            import sklearn.gaussian_process  # noqa: F401
        except ImportError as error:
            raise ConfigError(
                "tuner",
                f"bayesian needs scikit-learn and scipy ({error}): pip install 'keras-tuner[bayesian]', "
                "or use --tuner=random or hyperband",
            ) from None
    checks.check_positive_int("max_trials", max_trials)
    if str(objective).startswith("test"):
        raise ConfigError(
            "objective",
            f"{objective!r}: the test split is never used to select hyperparameters (its "
            f"accuracy would be optimistic); choose one of {', '.join(OBJECTIVES)}",
        )
    checks.check_choice("objective", objective, tuple(OBJECTIVES))
