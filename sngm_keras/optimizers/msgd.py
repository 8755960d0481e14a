"""MSGD: momentum SGD as the paper (and PyTorch) define it."""

import keras

from sngm_keras.optimizers.base import ReducedGradientOptimizer
from sngm_keras.optimizers.norms import global_norm


@keras.saving.register_keras_serializable(package="sngm_keras")
class MSGD(ReducedGradientOptimizer):
    """Momentum SGD with coupled L2 weight decay, the paper's baseline.

    With `g` the mean gradient of the whole batch, over its micro-batches and
    replicas (see `sngm_keras.optimizers.base`):

    ```python
    g = g + weight_decay * w
    u = momentum * u + g
    w = w - learning_rate * u
    ```

    This is PyTorch's `torch.optim.SGD(momentum=..., weight_decay=...)`
    (dampening 0), the update of He et al.'s ResNet recipe that the paper
    runs. Keras' `SGD` differs in two ways: its `weight_decay` is decoupled,
    and it folds the learning rate into the velocity, so a schedule's change
    of learning rate reaches the step one momentum time-constant later.

    Args:
        learning_rate: float > 0 or a `LearningRateSchedule`.
        momentum: beta in [0, 1).
        weight_decay: float >= 0, L2 added to the gradient (honours
            `exclude_from_weight_decay()`).
        decoupled_weight_decay: if True, Keras' decoupled decay instead.
        **kwargs: the keywords of `keras.optimizers.Optimizer` (clipping is
            applied to the all-reduced gradient), but not
            `gradient_accumulation_steps` (see `SNGM`).

    A step whose gradient holds NaN or Inf is skipped and counted in
    `skipped_steps`.
    """

    def __init__(
        self, learning_rate=0.1, momentum=0.9, weight_decay=0.0, decoupled_weight_decay=False, name="MSGD", **kwargs
    ):
        super().__init__(
            learning_rate=learning_rate,
            momentum=momentum,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            name=name,
            **kwargs,
        )

    def update_rule(self, grads, weights, momentums, learning_rate, l2):
        """One step over all variables at once (see
        `ReducedGradientOptimizer.update_rule`): the new weights `w`, the new
        momentums `u`, and `||g||`, which the rule does not use: it is
        recorded, and a non-finite one skips the step."""
        g = [gi + wd * wi if wd else gi for gi, wi, wd in zip(grads, weights, l2)]  # L2: g + wd * w
        norm = global_norm(g)
        u = [self.momentum * ui + gi for ui, gi in zip(momentums, g)]
        w = [wi - learning_rate * ui for wi, ui in zip(weights, u)]
        return w, u, norm

    def get_config(self):
        config = super().get_config()
        config["decoupled_weight_decay"] = self.decoupled_weight_decay
        return config
