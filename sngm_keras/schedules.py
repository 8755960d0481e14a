"""Learning-rate schedules of the paper's recipes, counted in parameter updates.

- `PolynomialWarmup`: the "poly power" schedule of You et al. (2017) that the
  paper uses for SNGM and LARS, `lr(t) = lr0 * (1 - t / T) ** power`, with an
  optional linear warm-up from `warmup_learning_rate` to `lr0` (LARS with
  warm-up in Table 2).
- `step_decay`: He et al.'s recipe for MSGD, the rate divided by `factor` at
  given epochs, built on `keras.optimizers.schedules.PiecewiseConstantDecay`.
"""

import keras
from keras import ops

from sngm_keras.checks import check_int, check_positive, check_positive_int, check_range


@keras.saving.register_keras_serializable(package="sngm_keras")
class PolynomialWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up for `warmup_steps`, then polynomial decay to zero.

    ```python
    if t < warmup_steps:
        lr = warmup_lr + (lr0 - warmup_lr) * t / warmup_steps
    else:
        s = (t - warmup_steps) / (total_steps - warmup_steps)
        lr = lr0 * (1 - min(s, 1)) ** power
    ```
    """

    def __init__(self, initial_learning_rate, total_steps, power=1.0, warmup_steps=0, warmup_learning_rate=0.0):
        self.initial_learning_rate = check_positive("initial_learning_rate", initial_learning_rate)
        self.total_steps = check_positive_int("total_steps", int(total_steps))
        self.power = check_positive("power", power)
        self.warmup_steps = check_int("warmup_steps", int(warmup_steps), 0, self.total_steps - 1)
        self.warmup_learning_rate = check_range("warmup_learning_rate", warmup_learning_rate, 0)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr0 = self.initial_learning_rate
        decay_span = float(self.total_steps - self.warmup_steps)
        progress = ops.clip((step - self.warmup_steps) / decay_span, 0.0, 1.0)
        decayed = lr0 * ops.power(1.0 - progress, self.power)
        if not self.warmup_steps:
            return decayed
        warm = self.warmup_learning_rate + (lr0 - self.warmup_learning_rate) * step / self.warmup_steps
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "total_steps": self.total_steps,
            "power": self.power,
            "warmup_steps": self.warmup_steps,
            "warmup_learning_rate": self.warmup_learning_rate,
        }


def step_decay(initial_learning_rate, steps_per_epoch, decay_epochs, factor=10.0):
    """He et al.: `initial_learning_rate` divided by `factor` at each of
    `decay_epochs`, from the first update of that epoch on (PyTorch's
    `MultiStepLR` stepped per epoch).

    The optimizer evaluates the schedule at its update count before the
    update, and `PiecewiseConstantDecay` switches only past a boundary: the
    update after `e * steps_per_epoch` others is at step `e *
    steps_per_epoch`, so each boundary sits one step earlier."""
    boundaries = [int(e * steps_per_epoch) - 1 for e in decay_epochs]
    values = [float(initial_learning_rate) / factor**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
