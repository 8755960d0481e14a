"""The hyperparameters searched and their ranges.

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
import math

import numpy as np

from sngm_keras.training.config import ConfigError

HYPERPARAMETERS = ("learning_rate", "momentum", "power", "weight_decay", "batch_size")

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
            if not (is_finite_number(m) and 0 <= m < 1):
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


def is_finite_number(value):
    """A finite int or float (NumPy's too), not a bool."""
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
        if not is_finite_number(value):
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

