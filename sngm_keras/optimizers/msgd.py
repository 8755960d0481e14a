"""MSGD: momentum SGD as the paper (and PyTorch) define it."""

import keras

from sngm_keras.optimizers.base import ReducedGradientOptimizer


@keras.saving.register_keras_serializable(package="sngm_keras")
class MSGD(ReducedGradientOptimizer):
    """Momentum SGD with coupled L2 weight decay, the paper's baseline.

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
        epsilon: unused by the update; kept for a common signature.
        **kwargs: the keywords of `keras.optimizers.Optimizer` (clipping is
            applied to the all-reduced gradient).

    A step whose gradient holds NaN or Inf is skipped and counted in
    `skipped_steps`.
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=0.0,
        decoupled_weight_decay=False,
        epsilon=1e-30,
        name="MSGD",
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

    def update_step(self, gradient, variable, learning_rate):
        self._momentum_update(variable, gradient, learning_rate)
