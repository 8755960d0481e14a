"""LARS: layer-wise adaptive rate scaling, the paper's large-batch baseline."""

import keras
from keras import ops

from sngm_keras.optimizers.base import ReducedGradientOptimizer, check_range
from sngm_keras.optimizers.norms import robust_norm


@keras.saving.register_keras_serializable(package="sngm_keras")
class LARS(ReducedGradientOptimizer):
    """Layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017).

    As in the pytorch-lars code the SNGM paper runs
    (github.com/noahgolmant/pytorch-lars), for each variable `w` with
    gradient `g` (after the all-reduce):

    ```python
    trust = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w||)
    u = momentum * u + learning_rate * trust * (g + weight_decay * w)
    w = w - u
    ```

    Variables excluded from adaptation use `trust = 1` and no weight decay:
    by default those of rank <= 1 (biases, BatchNorm scale and offset), as
    in You et al.; plus any excluded through `exclude_from_weight_decay()`
    (which then skip decay only). Where `||w||` or `||g||` is zero the trust
    ratio is 1 by default.

    `pytorch_lars=True` is the pytorch-lars code exactly: every variable is
    adapted and decayed (also biases and BatchNorm), and the trust ratio is
    the formula above everywhere, so a variable whose norm is zero gets a
    zero local rate and never moves (zero-initialised BatchNorm offsets and
    biases stay zero), and one whose gradient is zero takes a pure decay
    step of `learning_rate * trust_coefficient * w`.

    Args:
        learning_rate: float > 0 or a `LearningRateSchedule` (the global
            rate; pytorch-lars applies its polynomial decay to it).
        momentum: in [0, 1).
        weight_decay: float >= 0.
        trust_coefficient: eta of the paper, default 0.001.
        exclude_bias_and_norm: exclude rank <= 1 variables from adaptation
            and decay (ignored with `pytorch_lars=True`).
        pytorch_lars: the pytorch-lars semantics (see above).
        epsilon: guards the trust ratio's denominator.
        **kwargs: the keywords of `keras.optimizers.Optimizer` (clipping is
            applied to the all-reduced gradient).
    """

    # The trust ratio needs the bare gradient's norm; the decay is added here.
    _l2_in_gradient = False

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=0.0,
        trust_coefficient=0.001,
        exclude_bias_and_norm=True,
        pytorch_lars=False,
        epsilon=1e-30,
        name="LARS",
        **kwargs,
    ):
        kwargs.pop("decoupled_weight_decay", None)
        super().__init__(
            learning_rate=learning_rate,
            momentum=momentum,
            weight_decay=0.0,  # LARS applies its own decay, inside the trust ratio
            epsilon=epsilon,
            name=name,
            **kwargs,
        )
        self._weight_decay_value = check_range("weight_decay", weight_decay, 0.0)
        self.trust_coefficient = check_range("trust_coefficient", trust_coefficient, 0.0)
        if not self.trust_coefficient > 0:
            raise ValueError(f"trust_coefficient must be > 0, got {trust_coefficient!r}")
        self.pytorch_lars = bool(pytorch_lars)
        self.exclude_bias_and_norm = bool(exclude_bias_and_norm) and not self.pytorch_lars

    def _adapts(self, variable):
        return not (self.exclude_bias_and_norm and len(variable.shape) <= 1)

    def update_step(self, gradient, variable, learning_rate):
        gradient = ops.cast(gradient, "float32")
        if not self._adapts(variable):
            self._momentum_update(variable, gradient * ops.cast(learning_rate, gradient.dtype), 1.0)
            return
        w = ops.cast(variable, "float32")
        wd = self._weight_decay_value if self._use_weight_decay(variable) else 0.0
        w_norm = robust_norm([w])
        g_norm = robust_norm([gradient])
        trust = self.trust_coefficient * w_norm / (g_norm + wd * w_norm + self.epsilon)
        if not self.pytorch_lars:
            trust = ops.where(ops.logical_and(w_norm > 0, g_norm > 0), trust, ops.ones_like(trust))
        # On a skipped step the gradient is zero but wd * w is not: scale it away.
        scale = ops.where(self._step_ok(), learning_rate * trust, ops.zeros_like(trust))
        self._momentum_update(variable, (gradient + wd * w) * scale, 1.0)

    def get_config(self):
        config = super().get_config()
        config.pop("decoupled_weight_decay")
        config.update(
            {
                "trust_coefficient": self.trust_coefficient,
                "exclude_bias_and_norm": self.exclude_bias_and_norm,
                "pytorch_lars": self.pytorch_lars,
            }
        )
        return config
