"""Shared engine of SNGM, MSGD and LARS: the gradient of the whole step.

SNGM normalizes by the norm of the *whole* mini-batch gradient, so that norm
must be taken on the gradient the update really uses: after the cross-replica
all-reduce and after any micro-batch accumulation. That gradient `g` is the
paper's mini-batch gradient, the mean over the whole batch of the
per-example gradients (Keras' losses take the mean over the batch), not their
sum:

- one device: the gradient of the batch's mean loss;
- `MicroBatchModel`: the mean over the micro-batches of the gradient of each
  micro-batch's mean loss (the whole batch's mean, micro-batches being
  equal in size);
- `tf.distribute`: Keras scales each replica's loss by 1 / replicas, and
  `_all_reduce_sum_gradients` sums the replicas' gradients, so the sum is the
  mean over the global batch; on JAX the step's loss is the global batch's
  mean already.

Keras clips and decays before TensorFlow's all-reduce (per replica); this
base class moves every whole-gradient computation behind it, in
`_prepare_gradients`:

1. Keras clipping (`clipnorm`, `clipvalue`, `global_clipnorm`),
2. coupled L2 weight decay, `g <- g + wd * w` (the paper's and PyTorch's
   `weight_decay`), honouring `exclude_from_weight_decay`: `update_step`
   receives the decayed gradient (unless the subclass sets
   `_l2_in_gradient = False` and applies the decay itself, as LARS does),
3. the global gradient norm `||g||`, kept in the `gradient_norm` variable,
4. non-finite protection: a step whose gradient holds NaN or Inf adds one to
   `skipped_steps`, and `_unless_skipped` turns its update into one that
   leaves weights and momentum exactly as they were.

Keras' decoupled weight decay (`decoupled_weight_decay=True`) follows, before
`update_step` as in Keras, and only on a step that is not skipped
(`_decay_unless_skipped`).

On TensorFlow this runs in the replica context right after
`_all_reduce_sum_gradients` (the decoupled decay in the cross-replica
`_distributed_tf_update_step`); on JAX (and any other backend) the gradient
the optimizer receives is already global, so it runs first thing in
`_backend_update_step`. Each subclass writes its rule in `update_step`.
"""

import contextlib

import keras
from keras import ops

from sngm_keras.checks import check_learning_rate, check_range
from sngm_keras.optimizers.norms import global_norm


class ReducedGradientOptimizer(keras.optimizers.Optimizer):
    """Base of SNGM, MSGD and LARS; see the module docstring.

    Weight decay is held in one attribute per meaning: `l2_weight_decay`, the
    coupled decay added to the gradient (0 when decoupled), and Keras' own
    `weight_decay`, the decoupled decay Keras applies (None unless
    `decoupled_weight_decay=True`)."""

    # Whether `update_step` receives `g + wd * w` (coupled L2) or the bare `g`.
    _l2_in_gradient = True

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

    # -- where the whole gradient is seen -------------------------------------

    def _clip_gradients(self, grads):
        # Deferred to `_prepare_gradients`, after the all-reduce.
        return grads

    def _all_reduce_sum_gradients(self, grads_and_vars):
        # Private hook of Keras' TensorFlow optimizer, the one place where a
        # step's all-reduced gradient is seen in the replica context before
        # it is applied; no public API gives it. Pinned by
        # tests/test_optimizers.py::test_all_reduce_hook_sees_the_whole_gradient.
        grads_and_vars = list(super()._all_reduce_sum_gradients(grads_and_vars))
        grads = self._prepare_gradients([g for g, _ in grads_and_vars], [v for _, v in grads_and_vars])
        return list(zip(grads, [v for _, v in grads_and_vars]))

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if keras.backend.backend() != "tensorflow":
            grads = self._prepare_gradients(list(grads), list(trainable_variables))
            if self.weight_decay is not None:
                for variable in trainable_variables:
                    self._decay_unless_skipped(variable)
        super()._backend_update_step(grads, trainable_variables, learning_rate)

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        # Private hook of Keras' TensorFlow optimizer: where it applies
        # `update_step` to each variable, in the cross-replica context, after
        # `_all_reduce_sum_gradients`. The decoupled decay goes first, as in
        # Keras. Pinned by tests/test_optimizers.py::
        # test_a_skipped_step_does_not_decay_the_weights_either (a finite
        # step must still decay).
        if self.weight_decay is not None:
            for _, variable in grads_and_vars:
                distribution.extended.update(variable, self._decay_unless_skipped, group=False)
        super()._distributed_tf_update_step(distribution, grads_and_vars, learning_rate)

    def _apply_weight_decay(self, variables):
        # Keras applies its decoupled weight decay here, before
        # `_backend_update_step`, where this step's gradient -- and so
        # whether the step is skipped -- is not known yet (on TensorFlow it
        # is all-reduced inside `_backend_update_step`). The decay is applied
        # from there instead, once `_prepare_gradients` has run:
        # `_decay_unless_skipped`.
        return

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
        grads = [ops.cast(g, "float32") for g in super()._clip_gradients(grads)]
        if self._l2_in_gradient:
            grads = [self._with_l2(g, v) for g, v in zip(grads, variables)]
        norm = global_norm(grads)
        self.assign(self.gradient_norm, norm)
        self.assign_add(self.skipped_steps, ops.cast(ops.logical_not(ops.isfinite(norm)), self.skipped_steps.dtype))
        return grads

    # -- helpers for update_step ----------------------------------------------

    def _decay_unless_skipped(self, variable):
        """Keras' decoupled weight decay, `w <- w - w * wd * lr`, on a step
        whose gradient is finite; on a skipped step `w` stays as it is."""
        if not self._use_weight_decay(variable):
            return
        value = ops.convert_to_tensor(variable)
        lr = ops.cast(self.learning_rate, value.dtype)
        wd = ops.cast(self.weight_decay, value.dtype)
        self.assign(variable, ops.where(ops.isfinite(self.gradient_norm), value - value * wd * lr, value))

    def _with_l2(self, gradient, variable):
        """g + wd * w, the paper's weight decay, where it applies to `variable`."""
        if self.l2_weight_decay and self._use_weight_decay(variable):
            return gradient + self.l2_weight_decay * ops.cast(variable, gradient.dtype)
        return gradient

    def _unless_skipped(self, momentum, learning_rate, direction):
        """`(momentum, learning_rate, direction)` as given on a step whose
        gradient is finite; `(1, 0, 0)` on a skipped one, so that
        `u <- momentum * u + direction; w <- w - learning_rate * u` leaves
        weights and momentum exactly as they were."""
        ok = ops.isfinite(self.gradient_norm)
        return (
            ops.where(ok, momentum, 1.0),
            # The rate may arrive as Keras' learning-rate variable, which
            # JAX's `where` does not take as an array.
            ops.where(ok, ops.convert_to_tensor(learning_rate), 0.0),
            ops.where(ok, direction, ops.zeros_like(direction)),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.weight_decay if self.decoupled_weight_decay else self.l2_weight_decay,
            }
        )
        return config
