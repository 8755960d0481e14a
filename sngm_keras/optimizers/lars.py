"""LARS: layer-wise adaptive rate scaling, the paper's large-batch baseline."""

import keras
from keras import ops

from sngm_keras.checks import check_positive
from sngm_keras.optimizers.base import ReducedGradientOptimizer
from sngm_keras.optimizers.norms import global_norm


@keras.saving.register_keras_serializable(package="sngm_keras")
class LARS(ReducedGradientOptimizer):
    """Layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017).

    As in the pytorch-lars code the SNGM paper runs
    (github.com/noahgolmant/pytorch-lars), for each variable `w` with
    gradient `g` (the mean gradient of the whole batch, over its micro-batches
    and replicas, after the all-reduce; see `sngm_keras.optimizers.base`):

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
        weight_decay: float >= 0, coupled L2 (inside the trust ratio, as
            above; honours `exclude_from_weight_decay()`).
        trust_coefficient: float > 0, eta of the paper, default 0.001.
        exclude_bias_and_norm: exclude rank <= 1 variables from adaptation
            and decay (ignored with `pytorch_lars=True`).
        pytorch_lars: the pytorch-lars semantics (see above).
        epsilon: float > 0, the floor of the trust ratio's denominator
            `||g|| + weight_decay * ||w||` (pytorch-lars has none and gives
            NaN where both norms are zero).
        **kwargs: the keywords of `keras.optimizers.Optimizer` (clipping is
            applied to the all-reduced gradient), but not
            `gradient_accumulation_steps` (see `SNGM`). LARS has no
            decoupled weight decay.
    """

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
        if "decoupled_weight_decay" in kwargs:
            raise ValueError(
                "decoupled_weight_decay: LARS has no decoupled weight decay; its weight_decay is "
                "coupled, inside the trust ratio"
            )
        super().__init__(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay, name=name, **kwargs)
        self.trust_coefficient = check_positive("trust_coefficient", trust_coefficient)
        self.epsilon = check_positive("epsilon", epsilon)
        self.pytorch_lars = bool(pytorch_lars)
        self.exclude_bias_and_norm = bool(exclude_bias_and_norm) and not self.pytorch_lars

    def update_rule(self, grads, weights, momentums, learning_rate, l2):
        """One step over all variables at once (see
        `ReducedGradientOptimizer.update_rule`): the new weights `w`, the new
        momentums `u`, and the norm of the bare gradient, which the rule does
        not use: it is recorded, and a non-finite one skips the step."""
        norm = global_norm(grads)
        new_w, new_u = [], []
        for g, w, u, wd in zip(grads, weights, momentums, l2):
            if self.exclude_bias_and_norm and len(w.shape) <= 1:
                trust, wd = 1.0, 0.0
            else:
                w_norm, g_norm = global_norm([w]), global_norm([g])
                trust = self.trust_coefficient * w_norm / ops.maximum(g_norm + wd * w_norm, self.epsilon)
                if not self.pytorch_lars:
                    trust = ops.where(ops.logical_and(w_norm > 0, g_norm > 0), trust, 1.0)
            u = self.momentum * u + learning_rate * trust * (g + wd * w)  # the learning rate is inside u
            new_u.append(u)
            new_w.append(w - u)
        return new_w, new_u, norm

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "trust_coefficient": self.trust_coefficient,
                "exclude_bias_and_norm": self.exclude_bias_and_norm,
                "pytorch_lars": self.pytorch_lars,
                "epsilon": self.epsilon,
            }
        )
        return config
