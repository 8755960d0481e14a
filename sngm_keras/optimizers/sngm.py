"""SNGM: stochastic normalized gradient descent with momentum."""

import keras
from keras import ops

from sngm_keras.checks import check_positive
from sngm_keras.optimizers.base import ReducedGradientOptimizer
from sngm_keras.optimizers.norms import global_norm


@keras.saving.register_keras_serializable(package="sngm_keras")
class SNGM(ReducedGradientOptimizer):
    """Stochastic normalized gradient descent with momentum (Algorithm 1).

    Update rule, with `g` the gradient of the whole step: all trainable
    variables together, and the mean over the whole batch, as the paper's
    mini-batch gradient (the mean over the micro-batches of `MicroBatchModel`
    of each one's mean-loss gradient; across replicas the all-reduced sum of
    gradients of losses Keras scales by 1 / replicas; see
    `sngm_keras.optimizers.base`):

    ```python
    g = g + weight_decay * w          # L2, the paper's weight decay
    u = momentum * u + g / ||g||      # eq. (7)
    w = w - learning_rate * u         # eq. (8)
    ```

    `update_rule` is this rule, over all variables at once; the base class
    feeds it the whole gradient and applies what it returns (see
    `sngm_keras.optimizers.base`). `momentums` holds `u`. Lemma 2 of the
    paper follows from the rule: `||u|| <= 1 / (1 - momentum)` whatever the
    size of `g`, which is why SNGM tolerates learning rates and batch sizes
    at which momentum SGD diverges.

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
            direction, and not on a skipped step) instead.
        layerwise: if True, each variable's gradient is normalized by its own
            norm (the block-wise variant); the paper uses False.
        epsilon: float > 0, the floor of the norm: `g` is divided by
            `max(||g||, epsilon)`, so a zero gradient gives a zero step, not
            NaN.
        **kwargs: the keywords of `keras.optimizers.Optimizer`: `clipnorm`,
            `clipvalue`, `global_clipnorm` (applied to the all-reduced,
            accumulated gradient, before the L2 term), `use_ema`,
            `ema_momentum`, `ema_overwrite_frequency`, `loss_scale_factor`.
            Not `gradient_accumulation_steps`, which is refused (Keras'
            accumulation advances a learning-rate schedule at every
            accumulated gradient, and fails under tf.distribute):
            `MicroBatchModel` accumulates micro-batches into one update.

    `gradient_norm` holds the last step's `||g||`, computed without over- or
    underflow for gradients from 1e-30 to 1e30 (`norms.global_norm`). A step
    whose gradient holds NaN or Inf leaves weights and momentum as they are
    and adds one to `skipped_steps`; `iterations` still advances (the
    training app records both per epoch and warns about skipped steps).
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
            name=name,
            **kwargs,
        )
        self.layerwise = bool(layerwise)
        self.epsilon = check_positive("epsilon", epsilon)

    def update_rule(self, grads, weights, momentums, learning_rate, l2):
        """Algorithm 1, one step over all variables at once (see
        `ReducedGradientOptimizer.update_rule`): the new weights `w`, the new
        momentums `u`, and `||g||`. A non-finite `||g||` skips the step."""
        g = [gi + wd * wi if wd else gi for gi, wi, wd in zip(grads, weights, l2)]  # L2: g + wd * w
        norm = global_norm(g)  # ||g||, of the whole gradient
        if self.layerwise:
            directions = [gi / ops.maximum(global_norm([gi]), self.epsilon) for gi in g]
        else:
            directions = [gi / ops.maximum(norm, self.epsilon) for gi in g]  # g / ||g||
        u = [self.momentum * ui + di for ui, di in zip(momentums, directions)]  # eq. (7)
        w = [wi - learning_rate * ui for wi, ui in zip(weights, u)]  # eq. (8)
        return w, u, norm

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "decoupled_weight_decay": self.decoupled_weight_decay,
                "layerwise": self.layerwise,
                "epsilon": self.epsilon,
            }
        )
        return config
