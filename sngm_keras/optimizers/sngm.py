"""SNGM: stochastic normalized gradient descent with momentum."""

import keras
from keras import ops

from sngm_keras.optimizers.base import ReducedGradientOptimizer
from sngm_keras.optimizers.norms import robust_norm


@keras.saving.register_keras_serializable(package="sngm_keras")
class SNGM(ReducedGradientOptimizer):
    """Stochastic normalized gradient descent with momentum (Algorithm 1).

    Update rule, with `g` the gradient of the whole step (all trainable
    variables together, after the all-reduce across replicas and the sum over
    micro-batches):

    ```python
    g = g + weight_decay * w          # L2, the paper's weight decay
    u = momentum * u + g / ||g||      # eq. (7)
    w = w - learning_rate * u         # eq. (8)
    ```

    Lemma 2 of the paper follows: `||u|| <= 1 / (1 - momentum)` whatever the
    size of `g`, which is why SNGM tolerates learning rates and batch sizes at
    which momentum SGD diverges.

    Reference: Zhao, Xie, Gao, Li, "Stochastic Normalized Gradient Descent
    with Momentum for Large Batch Training", arXiv:2007.13985.

    Args:
        learning_rate: float > 0, or a `LearningRateSchedule` (evaluated at
            the optimizer's `iterations`, one per parameter update).
        momentum: beta in [0, 1). 0 gives stochastic normalized GD.
        weight_decay: float >= 0. L2 added to the gradient before the norm,
            `g <- g + wd * w`, except for variables excluded with
            `exclude_from_weight_decay()`.
        decoupled_weight_decay: if True, `weight_decay` is Keras' decoupled
            decay (`w <- w - lr * wd * w`, applied outside the normalized
            direction) instead.
        layerwise: if True, each variable's gradient is normalized by its own
            norm (the block-wise variant); the paper uses False.
        epsilon: the norm is taken as `max(||g||, epsilon)`, so a zero gradient
            gives a zero step, not NaN.
        **kwargs: the keywords of `keras.optimizers.Optimizer`: `clipnorm`,
            `clipvalue`, `global_clipnorm` (applied to the all-reduced
            gradient), `use_ema`, `ema_momentum`, `ema_overwrite_frequency`,
            `loss_scale_factor`, `gradient_accumulation_steps`.

    A step whose gradient holds NaN or Inf leaves weights and momentum as they
    are and adds one to `skipped_steps`; `iterations` still advances.
    `gradient_norm` holds the last step's `||g||` (the training app records it
    per epoch; `sngm_keras.training.callbacks.SkippedStepsMonitor` logs a
    warning when steps were skipped).

    Stored momentum: with the global norm (the default) each slot in
    `momentums` holds `v = s * u`, scaled by `s = ||g||` of the last applied
    step (kept in `momentum_scale`), and `momentum_buffers()` returns the
    paper's `u = v / momentum_scale`. In that form the step is

    ```python
    v = momentum * (s_t / s_{t-1}) * v + g     # = s_t * u_t
    w = w - (learning_rate / s_t) * v
    ```

    which is Algorithm 1 exactly, with two per-step scalars and the gradient
    used as it is: one fused in-place pass per variable, with no pass that
    first divides the gradient by its norm. On the rare steps whose float32
    sum of squares over- or underflows (`||g||` below about 1e-15 or above
    about 1e19), `g` arrives divided by `max|g|` and `s_t` is its norm in
    those units, and an all-zero gradient keeps `s`, so `s` and the ratio
    `s_t / s_{t-1}` stay well inside float32's range whatever the gradients
    do. `layerwise=True` keeps `u` itself in `momentums`.
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=0.0,
        decoupled_weight_decay=False,
        layerwise=False,
        epsilon=1e-30,
        name="SNGM",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            momentum=momentum,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            epsilon=epsilon,
            name=name,
            **kwargs,
        )
        self.layerwise = bool(layerwise)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # s, the norm of the last applied step by which `momentums` are
        # scaled, and this step's factor momentum * s_t / s_{t-1}.
        self.momentum_scale = self.add_variable(
            (), initializer="ones", dtype="float32", aggregation="only_first_replica", name="momentum_scale"
        )
        self.momentum_decay = self.add_variable(
            (), initializer="ones", dtype="float32", aggregation="only_first_replica", name="momentum_decay"
        )

    def _rescales_gradient(self):
        return not self.layerwise

    def _record_gradient_norm(self, norm, ok, divisor):
        if self.layerwise:
            return
        # ||g|| in the units of the gradient update_step receives.
        scale = ops.maximum(norm, self.epsilon) / divisor
        previous = ops.convert_to_tensor(self.momentum_scale)
        # A zero gradient adds nothing, so v may keep its scale: a ratio to
        # epsilon could overflow at the next step.
        rescaled = ops.logical_and(ok, norm > 0)
        decay = ops.where(rescaled, self.momentum * (scale / previous), ops.where(ok, self.momentum, 1.0))
        self.assign(self.momentum_decay, decay)
        self.assign(self.momentum_scale, ops.where(rescaled, scale, previous))

    def update_step(self, gradient, variable, learning_rate):
        if self.layerwise:
            # A zeroed gradient (skipped step) gives 0 * (1 / epsilon) = 0.
            inverse_norm = 1.0 / ops.maximum(robust_norm([gradient]), self.epsilon)
            self._momentum_update(variable, gradient * inverse_norm, learning_rate)
            return
        lr = ops.cast(learning_rate, "float32") / self.momentum_scale
        self._momentum_update(variable, gradient, lr, decay=self.momentum_decay)

    def momentum_buffers(self):
        if self.layerwise:
            return super().momentum_buffers()
        scale = ops.convert_to_tensor(self.momentum_scale)
        return [ops.convert_to_tensor(v) / ops.cast(scale, v.dtype) for v in self.momentums]

    def get_config(self):
        config = super().get_config()
        config["layerwise"] = self.layerwise
        return config

