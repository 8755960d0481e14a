"""Shared engine of the momentum optimizers: the gradient of the whole step.

SNGM normalizes by the norm of the *whole* mini-batch gradient, so that norm
must be taken on the gradient the update really uses: after the cross-replica
all-reduce and after any micro-batch accumulation. Keras clips and decays
before TensorFlow's all-reduce (per replica); this base class moves every
whole-gradient computation behind it:

1. Keras clipping (`clipnorm`, `clipvalue`, `global_clipnorm`),
2. coupled L2 weight decay, `g <- g + wd * w` (the paper's and PyTorch's
   `weight_decay`), honouring `exclude_from_weight_decay`: `update_step`
   receives the decayed gradient (unless the subclass sets
   `_l2_in_gradient = False` and applies the decay itself, as LARS does),
3. the global gradient norm `||g||`, kept in the `gradient_norm` variable,
4. non-finite protection: a step whose gradient holds NaN or Inf leaves the
   weights and momentum unchanged and adds one to `skipped_steps` (the
   gradient `update_step` receives is then zero, and the update runs with
   momentum 1 and learning rate 0).

On TensorFlow this runs in the replica context right after
`_all_reduce_sum_gradients`; on JAX (and any other backend) the gradient the
optimizer receives is already global, so it runs first thing in
`_backend_update_step`. Subclasses implement `update_step`, reading the norm
and the step's validity through `_step_ok()` and `gradient_norm`.
"""

import contextlib

import keras
from keras import ops

from sngm_keras.optimizers.norms import guarded_norm


def check_learning_rate(learning_rate):
    """Returns the learning rate as Keras wants it, or raises ValueError."""
    if isinstance(learning_rate, bool):
        raise ValueError(f"learning_rate must be a positive float or a schedule, got {learning_rate!r}")
    if isinstance(learning_rate, (int, float)):
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
        return float(learning_rate)
    if callable(learning_rate) or isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return learning_rate
    raise ValueError(f"learning_rate must be a positive float or a schedule, got {learning_rate!r}")


def check_range(name, value, low, high=None, high_inclusive=False):
    """Raises ValueError naming `name` unless low <= value < high (or <= high)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if not value >= low or too_high:
        bracket = "]" if high_inclusive else ")"
        span = f"[{low}, {high}{bracket}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be in {span}, got {value!r}")
    return float(value)


class ReducedGradientOptimizer(keras.optimizers.Optimizer):
    """Base of SNGM, MSGD and LARS; see the module docstring."""

    # Whether `update_step` receives `g + wd * w` (coupled L2) or the bare `g`.
    _l2_in_gradient = True

    def __init__(
        self,
        learning_rate,
        momentum=0.9,
        weight_decay=0.0,
        decoupled_weight_decay=False,
        epsilon=1e-30,
        name=None,
        **kwargs,
    ):
        learning_rate = check_learning_rate(learning_rate)
        momentum = check_range("momentum", momentum, 0.0, 1.0)
        weight_decay = check_range("weight_decay", weight_decay, 0.0)
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
        decoupled = bool(decoupled_weight_decay)
        # Keras' own `weight_decay` is the decoupled kind; hand it over only then.
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay if decoupled and weight_decay > 0 else None,
            name=name,
            **kwargs,
        )
        self.momentum = momentum
        self.l2_weight_decay = 0.0 if decoupled else weight_decay
        self.decoupled_weight_decay = decoupled
        self.epsilon = float(epsilon)
        self._weight_decay_value = weight_decay

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        self.gradient_norm = self.add_variable(
            (), dtype="float32", aggregation="only_first_replica", name="gradient_norm"
        )
        self.skipped_steps = self.add_variable(
            (), dtype="int", aggregation="only_first_replica", name="skipped_steps"
        )

    # -- where the whole gradient is seen -------------------------------------

    def _clip_gradients(self, grads):
        # Deferred to `_prepare_gradients`, after the all-reduce.
        return grads

    def _all_reduce_sum_gradients(self, grads_and_vars):
        # TensorFlow backend only: TFOptimizer._backend_update_step calls this
        # in the replica context; the result is what every replica applies.
        grads_and_vars = list(super()._all_reduce_sum_gradients(grads_and_vars))
        grads = self._prepare_gradients(
            [g for g, _ in grads_and_vars], [v for _, v in grads_and_vars]
        )
        return list(zip(grads, [v for _, v in grads_and_vars]))

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if keras.backend.backend() != "tensorflow":
            grads = self._prepare_gradients(list(grads), list(trainable_variables))
        super()._backend_update_step(grads, trainable_variables, learning_rate)

    @contextlib.contextmanager
    def observing_gradient(self, fn):
        """While inside, each step calls `fn(grads)` with the step's whole
        gradient: after the all-reduce, before clipping and weight decay (in
        the replica context on TensorFlow, possibly inside a conditional).
        `MicroBatchModel` measures the gradient noise scale with it."""
        previous = getattr(self, "_gradient_observer", None)
        self._gradient_observer = fn
        try:
            yield
        finally:
            self._gradient_observer = previous

    def _prepare_gradients(self, grads, variables):
        observer = getattr(self, "_gradient_observer", None)
        if observer is not None:
            observer(grads)
        grads = super()._clip_gradients(grads)
        if self._l2_in_gradient:
            # Computed once for the norm and the update alike: without XLA a
            # second `g + wd * w` in update_step is one more pass over both.
            grads = [self._with_l2(g, v) for g, v in zip(grads, variables)]
        norm, grads, divisor = guarded_norm(grads, rescale=self._rescales_gradient())
        ok = ops.isfinite(norm)
        self.assign(self.gradient_norm, norm)
        self.assign_add(self.skipped_steps, ops.cast(ops.logical_not(ok), self.skipped_steps.dtype))
        self._record_gradient_norm(norm, ok, divisor)
        return grads

    def _rescales_gradient(self):
        """Whether `update_step` may receive `g / divisor` (see
        `norms.guarded_norm`) on steps whose sum of squares over- or
        underflows; only a scale-invariant update can."""
        return False

    def _record_gradient_norm(self, norm, ok, divisor):
        """Hook for per-step scalars derived from `||g||` and the `divisor`
        the gradients were divided by, run once per step before any
        `update_step` (in the replica context on TensorFlow)."""

    # -- helpers for update_step ----------------------------------------------

    def _with_l2(self, gradient, variable):
        """g + wd * w, the paper's weight decay, where it applies to `variable`."""
        gradient = ops.cast(gradient, "float32")
        if self.l2_weight_decay and self._use_weight_decay(variable):
            return gradient + self.l2_weight_decay * ops.cast(variable, "float32")
        return gradient

    def _step_ok(self):
        """True when this step's gradient is finite (read after the all-reduce)."""
        return ops.isfinite(self.gradient_norm)

    def _momentum_update(self, variable, direction, learning_rate, decay=None):
        """u <- decay * u + direction; w <- w - learning_rate * u, with decay
        the momentum unless given.

        A skipped step (non-finite gradient) runs with decay 1 and learning
        rate 0 on the zeros `_prepare_gradients` passed on instead of the
        gradient: weights and momentum stay exactly as they were. `direction`
        must be the gradient times a finite factor for that to hold."""
        dtype = variable.dtype
        ok = self._step_ok()
        u = self.momentums[self._get_variable_index(variable)]
        decay = self.momentum if decay is None else decay
        decay = ops.where(ok, ops.cast(decay, dtype), ops.ones((), dtype))
        lr = ops.where(ok, ops.cast(learning_rate, dtype), ops.zeros((), dtype))
        direction = ops.cast(direction, dtype)
        if keras.backend.backend() == "tensorflow":
            return _tf_apply_momentum(variable, u, direction, decay, lr)
        new_u = ops.convert_to_tensor(u) * decay + direction
        self.assign(u, new_u)
        self.assign_sub(variable, lr * new_u)

    def momentum_buffers(self):
        """The momentum `u` of each trainable variable, as the paper defines
        it (Algorithm 1), as tensors in the order of `momentums`."""
        return [ops.convert_to_tensor(u) for u in self.momentums]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self._weight_decay_value,
                "decoupled_weight_decay": self.decoupled_weight_decay,
                "epsilon": self.epsilon,
            }
        )
        return config


def _tf_apply_momentum(variable, momentum, direction, decay, lr):
    """TensorFlow's fused kernel for exactly this update, one in-place pass
    over w and u instead of five element-wise kernels (XLA compiles it too)."""
    import tensorflow as tf

    def handle(v):
        return (v.value if isinstance(v, keras.Variable) else v).handle

    tf.raw_ops.ResourceApplyMomentum(
        var=handle(variable), accum=handle(momentum), lr=lr, grad=direction, momentum=decay,
        use_locking=False, use_nesterov=False,
    )
