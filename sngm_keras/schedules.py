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
        if not initial_learning_rate > 0:
            raise ValueError(f"initial_learning_rate must be > 0, got {initial_learning_rate!r}")
        if not int(total_steps) >= 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps!r}")
        if not power > 0:
            raise ValueError(f"power must be > 0, got {power!r}")
        if not 0 <= int(warmup_steps) < int(total_steps):
            raise ValueError(f"warmup_steps must be in [0, total_steps), got {warmup_steps!r}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.total_steps = int(total_steps)
        self.power = float(power)
        self.warmup_steps = int(warmup_steps)
        self.warmup_learning_rate = float(warmup_learning_rate)

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
    """He et al.: `initial_learning_rate` divided by `factor` at each of `decay_epochs`."""
    boundaries = [int(e * steps_per_epoch) for e in decay_epochs]
    values = [float(initial_learning_rate) / factor**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
