"""Shared plumbing of SNGM, MSGD and LARS: the whole step on the whole gradient.

Each subclass states its update as one function of the whole step,
`update_rule(grads, weights, momentums, learning_rate, l2)`: from the
gradient of every trainable variable at once and their current values, it
returns the new weights, the new momentums and the norm `||g||` -- the rule
read top to bottom (for SNGM: L2, the norm, the direction, eq. (7), eq. (8)).
It assigns nothing. This base class gives it the right gradient and applies
what it returns:

- The gradient is the paper's mini-batch gradient, the mean over the whole
  batch of the per-example gradients (Keras' losses take the mean over the
  batch), not their sum. On one device it is the gradient of the batch's mean
  loss; with `MicroBatchModel`, the mean over the micro-batches of the
  gradient of each one's mean loss (the whole batch's mean, micro-batches
  being equal in size); under `tf.distribute`, Keras scales each replica's
  loss by 1 / replicas and the base sums the replicas' gradients (one
  all-reduce), so the sum is the mean over the global batch; on JAX the
  step's loss is the global batch's mean already.
- Keras clipping (`clipnorm`, `clipvalue`, `global_clipnorm`) applies to that
  gradient, after the all-reduce and the accumulation (Keras clips before
  TensorFlow's all-reduce, per replica: `_clip_gradients` is deferred here).
- `l2` holds each variable's coupled weight decay: `weight_decay`, or 0.0
  where `exclude_from_weight_decay()` excludes the variable or the decay is
  decoupled.
- Keras' decoupled weight decay (`decoupled_weight_decay=True`),
  `w <- w - w * wd * lr`, is applied to the weights the rule receives, so
  before the rule as in Keras (its `_apply_weight_decay`, where Keras applies
  it before this step's gradient is known, does nothing).
- Around the whole step, once: the norm the rule returns is kept in
  `gradient_norm`; where it is NaN or Inf (a gradient holding NaN or Inf),
  `skipped_steps` grows by one and every weight and momentum keeps the value
  it had before the step, decoupled decay included (one
  `cond(finite, new values, old values)`).

`observing_gradient` gives the same gradient, before clipping, to an
observer (the gradient noise scale of `MicroBatchModel`).

The step runs in Keras' `_backend_update_step`. On TensorFlow that is in the
replica context: the gradients are all-reduced there, the rule runs on each
replica (on identical values), and the new values are assigned in the
cross-replica context through the strategy (`extended.update`), as Keras'
own TensorFlow optimizer assigns its updates. On JAX (and any other backend)
the gradient the optimizer receives is already global.
"""

import contextlib

import keras
from keras import ops

from sngm_keras.checks import check_learning_rate, check_range


class ReducedGradientOptimizer(keras.optimizers.Optimizer):
    """Base of SNGM, MSGD and LARS; see the module docstring.

    Weight decay is held in one attribute per meaning: `l2_weight_decay`, the
    coupled decay added to the gradient (0 when decoupled), and Keras' own
    `weight_decay`, the decoupled decay Keras applies (None unless
    `decoupled_weight_decay=True`)."""

    def __init__(
        self, learning_rate, momentum=0.9, weight_decay=0.0, decoupled_weight_decay=False, name=None, **kwargs
    ):
        if kwargs.get("gradient_accumulation_steps"):
            raise ValueError(
                f"gradient_accumulation_steps: not supported by {type(self).__name__}: Keras' gradient accumulation "
                "evaluates a learning-rate schedule at every accumulated gradient instead of once per update, and "
                "under tf.distribute it all-reduces inside a conditional, which fails; use "
                "sngm_keras.MicroBatchModel(model, micro_batch_size), which accumulates micro-batches into one update"
            )
        learning_rate = check_learning_rate(learning_rate)
        momentum = check_range("momentum", momentum, 0.0, 1.0)
        weight_decay = check_range("weight_decay", weight_decay, 0.0)
        decoupled = bool(decoupled_weight_decay)
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay if decoupled and weight_decay > 0 else None,
            name=name,
            **kwargs,
        )
        self.momentum = momentum
        self.decoupled_weight_decay = decoupled
        self.l2_weight_decay = 0.0 if decoupled else weight_decay

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        self.gradient_norm = self.add_variable(
            (), dtype="float32", aggregation="only_first_replica", name="gradient_norm"
        )
        self.skipped_steps = self.add_variable((), dtype="int", aggregation="only_first_replica", name="skipped_steps")

    def update_rule(self, grads, weights, momentums, learning_rate, l2):
        """The optimizer's step over all variables at once.

        Args:
            grads: the step's whole gradient, one float32 tensor per variable.
            weights: the variables' values (decoupled decay applied).
            momentums: the momentum buffers' values.
            learning_rate: this step's rate.
            l2: per variable, the coupled weight decay (a float, 0.0 where
                none applies).

        Returns:
            `(weights, momentums, norm)`: the new values and the gradient
            norm that `gradient_norm` records; a non-finite norm skips the
            step.
        """
        raise NotImplementedError

    # -- the whole step --------------------------------------------------------

    def _clip_gradients(self, grads):
        # Private Keras hook, called by `apply` before `_backend_update_step`:
        # deferred to `_whole_step`, after the all-reduce.
        return grads

    def _apply_weight_decay(self, variables):
        # Private Keras hook: Keras applies its decoupled weight decay here,
        # before `_backend_update_step`, where this step's gradient -- and so
        # whether the step is skipped -- is not known yet. `_whole_step`
        # applies it instead. Pinned by tests/test_optimizers.py::
        # test_a_skipped_step_does_not_decay_the_weights_either.
        return

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # Private Keras hook: `apply` calls it with the gradients (Nones
        # dropped), after `_clip_gradients` and `_apply_weight_decay`; each
        # backend's optimizer applies the update there (on TensorFlow it holds
        # the all-reduce and the strategy's update, replaced here). Pinned by
        # tests/test_private_api_pins.py::test_keras_applies_through_the_backend_update_step.
        if keras.backend.backend() == "tensorflow":
            self._tf_update_step(grads, trainable_variables, learning_rate)
            return
        for variable, value in self._whole_step(grads, list(trainable_variables), learning_rate):
            self.assign(variable, value)

    def _tf_update_step(self, grads, trainable_variables, learning_rate):
        import tensorflow as tf

        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        context = tf.distribute.get_replica_context()
        if context is not None:  # as Keras' TensorFlow optimizer: the sum over the replicas
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, list(grads))
        updates = [
            (v.value if isinstance(v, keras.Variable) else v, x)
            for v, x in self._whole_step(grads, variables, learning_rate)
        ]

        def assign_all(distribution, updates):
            for variable, value in updates:
                distribution.extended.update(variable, self.assign, args=(value,), group=False)

        # TensorFlow's internal API, which Keras' own TensorFlow optimizer
        # calls for the same purpose: the cross-replica update, by merge_call
        # where the strategy needs one. Pinned by
        # tests/test_private_api_pins.py::test_keras_applies_through_the_backend_update_step.
        tf.__internal__.distribute.interim.maybe_merge_call(assign_all, self._distribution_strategy, updates)

    def _whole_step(self, grads, variables, learning_rate):
        """The step on the whole gradient `grads` of `variables`: the
        `(variable, new value)` pairs of the weights and momentums to assign
        (in the replica context on TensorFlow)."""
        observer = getattr(self, "_gradient_observer", None)
        if observer is not None:
            observer(grads)
        grads = [ops.cast(g, "float32") for g in super()._clip_gradients(grads)]
        weights = [ops.convert_to_tensor(v) for v in variables]
        momentum_variables = [self.momentums[self._get_variable_index(v)] for v in variables]
        momentums = [ops.convert_to_tensor(u) for u in momentum_variables]
        l2 = [self.l2_weight_decay if self.l2_weight_decay and self._use_weight_decay(v) else 0.0 for v in variables]
        new_weights, new_momentums, norm = self.update_rule(
            grads, self._decoupled_decay(weights, variables, learning_rate), momentums, learning_rate, l2
        )
        # A step whose gradient is not finite changes nothing but the count.
        self.assign(self.gradient_norm, norm)
        finite = ops.isfinite(norm)
        self.assign_add(self.skipped_steps, ops.cast(ops.logical_not(finite), self.skipped_steps.dtype))
        # A cond, not an element-wise `where`: XLA fuses a `where` into the
        # rule's arithmetic, and XLA:CPU then contracts `beta * u + d` into a
        # different fused multiply-add, which moves the last bit of `u`.
        values = ops.cond(finite, lambda: new_weights + new_momentums, lambda: weights + momentums)
        return list(zip(list(variables) + momentum_variables, values))

    def _decoupled_decay(self, weights, variables, learning_rate):
        """Keras' decoupled weight decay, `w <- w - w * wd * lr`, where it applies."""
        if self.weight_decay is None:
            return weights
        decayed = []
        for value, variable in zip(weights, variables):
            if self._use_weight_decay(variable):
                lr = ops.cast(learning_rate, value.dtype)
                wd = ops.cast(self.weight_decay, value.dtype)
                value = value - value * wd * lr
            decayed.append(value)
        return decayed

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

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.weight_decay if self.decoupled_weight_decay else self.l2_weight_decay,
            }
        )
        return config
