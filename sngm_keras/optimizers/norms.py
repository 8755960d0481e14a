"""Euclidean norms of gradients: exact, safe from over- and underflow, and
fast where the compiler's own reduction is slow.

`robust_norm(tensors)` is `sqrt(sum t^2)` over a list of tensors, with a
rescaled second pass that runs only when the plain sum of squares over- or
underflows.

`sum_of_squares(tensors)` picks the fastest exact float32 form for the
backend and compiler it is traced under (measured with
`apps/bench_optimizer.py`):

- TensorFlow without XLA: `2 * tf.nn.l2_loss(t)` per tensor, one fused,
  multi-threaded kernel instead of a square kernel and a reduction kernel;
- under XLA (TensorFlow with `jit_compile`, JAX), small tensors of the same
  shape are squared and added element-wise first, in one fused kernel, and
  reduced once per shape: XLA runs each reduction as a kernel of its own,
  and a ResNet-56 has 167 gradients but 11 shapes;
- TensorFlow's XLA:CPU emits a reduction to a scalar as one scalar loop,
  several times slower than the momentum update itself on large models.
  There, all tensors are grouped by shape and a large group is summed as a
  matrix-vector product, `[rows, k] @ ones[k]`, which XLA:CPU vectorizes;
  `k` (the product of trailing dimensions, so the reshape is free) stays
  between 64 and 4096, so each row's float32 sum is as accurate as the
  reduction's. JAX's own, newer XLA:CPU reduces large tensors fast, and XLA
  on GPU and TPU reduces in parallel: they keep `sum(square(t))`.
"""

import functools
import math

import keras
from keras import ops

# Below this sum of squares (or above float32's range) the plain
# sqrt(sum g^2) loses precision, so the norm is recomputed scaled by max|g|.
_SUM_OF_SQUARES_FLOOR = 1e-30

# The matrix-vector form pays off above this size; smaller tensors cost
# little either way.
_MATVEC_MIN_SIZE = 16384
_MATVEC_MIN_COLUMNS = 64
_MATVEC_MAX_COLUMNS = 4096


def robust_norm(tensors):
    """Euclidean norm of a list of tensors, in float32, safe from over- and
    underflow: gradients of 1e30 or 1e-30 still give the right norm. NaN or
    Inf anywhere gives a non-finite result."""
    tensors = [ops.cast(t, "float32") for t in tensors]
    return _norm_cond(tensors, lambda norm, divisor: [norm])[0]


def guarded_norm(tensors, rescale=False):
    """`(norm, tensors / divisor, divisor)` with `norm = robust_norm(tensors)`.

    - Where `norm` is not finite (NaN or Inf anywhere), the tensors come back
      as zeros: an update that multiplies them by zero on a skipped step then
      gets zero.
    - `divisor` is 1, except with `rescale=True` on the rare steps whose
      plain float32 sum of squares over- or underflows: there it is
      `max|t|`, so the tensors returned and their norm `norm / divisor`
      (between 1 and sqrt(size)) are safely inside float32's range.

    On TensorFlow without XLA all of it comes out of the one conditional the
    norm needs anyway, saving a masking pass per tensor at every step; a
    compiler fuses the mask into the update instead, and would copy tensors
    passed through a conditional."""
    tensors = [ops.cast(t, "float32") for t in tensors]

    def guarded(norm, divisor):
        ok = ops.isfinite(norm)
        if not rescale:
            return [norm, ops.ones_like(divisor)] + [ops.where(ok, t, ops.zeros_like(t)) for t in tensors]
        return [norm, divisor] + [ops.where(ok, t / divisor, ops.zeros_like(t)) for t in tensors]

    if _tf_graph_without_xla():
        outputs = _norm_cond(tensors, lambda norm, divisor: [norm, divisor] + tensors, guarded)
        return outputs[0], list(outputs[2:]), outputs[1]
    norm, divisor = _norm_cond(tensors, lambda norm, divisor: [norm, divisor])
    outputs = guarded(norm, divisor)
    return outputs[0], list(outputs[2:]), outputs[1]


def _norm_cond(tensors, in_range_outputs, rescued_outputs=None):
    """Runs `in_range_outputs(sqrt(sum t^2), 1)` when the float32 sum of
    squares is finite and above the floor, else `rescued_outputs(norm, peak)`
    with the norm recomputed scaled by `peak = max|t|` (a second pass, on such
    steps only)."""
    rescued_outputs = rescued_outputs or in_range_outputs
    sum_sq = sum_of_squares(tensors)

    def scaled():
        peak = ops.max(ops.stack([ops.max(ops.abs(t)) for t in tensors]))
        peak = ops.where(peak > 0, peak, ops.ones_like(peak))
        return rescued_outputs(peak * ops.sqrt(sum(ops.sum(ops.square(t / peak)) for t in tensors)), peak)

    in_range = ops.logical_and(sum_sq > _SUM_OF_SQUARES_FLOOR, ops.isfinite(sum_sq))
    return _cond(in_range, lambda: in_range_outputs(ops.sqrt(sum_sq), ops.ones_like(sum_sq)), scaled)


def sum_of_squares(tensors):
    """sum(t ** 2) over a list of tensors, a float32 scalar, in the form that
    is fastest under the current backend and compiler (see the module
    docstring)."""
    tensors = [ops.cast(t, "float32") for t in tensors]
    backend = keras.backend.backend()
    if backend == "tensorflow" and not _in_tf_xla_context():
        import tensorflow as tf

        return 2.0 * tf.add_n([tf.nn.l2_loss(t) for t in tensors])
    # Only the XLA:CPU inside TensorFlow reduces slowly enough for the
    # matrix-vector form to win; JAX's newer XLA:CPU reduces large tensors
    # well, and summing them first as groups costs it more than it saves.
    tf_cpu = backend == "tensorflow" and _tf_runs_on_cpu()
    groups = {}
    for i, t in enumerate(tensors):
        shape = tuple(t.shape)
        key = shape if tf_cpu or math.prod(shape) < _MATVEC_MIN_SIZE else (shape, i)
        groups.setdefault(key, []).append(t)
    total = 0.0
    for group in groups.values():
        squares = sum(ops.square(t) for t in group)
        columns = matvec_columns(tuple(squares.shape)) if tf_cpu else None
        total = total + (_matvec_sum(squares, columns) if columns else ops.sum(squares))
    return total


def matvec_columns(shape):
    """Columns `k` of the [rows, k] matrix a tensor of `shape` is summed as,
    the product of its trailing dimensions (so the reshape is free); None
    where the tensor is small or no product lands in [64, 4096]."""
    if math.prod(shape) < _MATVEC_MIN_SIZE:
        return None
    columns = 1
    for d in reversed(shape):
        if columns >= _MATVEC_MIN_COLUMNS:
            break
        columns *= d
    return columns if _MATVEC_MIN_COLUMNS <= columns <= _MATVEC_MAX_COLUMNS else None


def _matvec_sum(tensor, columns):
    """sum(tensor) as [rows, columns] @ ones[columns]: vectorized by XLA:CPU."""
    rows = ops.reshape(tensor, (-1, columns))
    return ops.sum(ops.matmul(rows, ops.ones((columns, 1), dtype="float32")))


def _cond(pred, true_fn, false_fn):
    """ops.cond; on TensorFlow outside XLA, an If op that stays a function
    call: the default lowering to Switch/Merge sends a dead tensor through
    every op of the untaken rescue branch, one per gradient, at every step
    (measured 0.3 ms per update on ResNet-56)."""
    # Under XLA an If is compiled, not lowered; a Case op there made XLA's
    # compilation of ResNet-50's update run out of memory.
    if _tf_graph_without_xla():
        import tensorflow as tf

        try:
            from tensorflow.python.ops import cond_v2
        except ImportError:
            return ops.cond(pred, true_fn, false_fn)
        return cond_v2.indexed_case(tf.cast(pred, tf.int32), [false_fn, true_fn], lower_using_switch_merge=False)
    return ops.cond(pred, true_fn, false_fn)


def _tf_graph_without_xla():
    """True while tracing a TensorFlow graph that XLA will not compile."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.executing_eagerly() and not _in_tf_xla_context()


def _in_tf_xla_context():
    """True while tracing a TensorFlow function compiled with XLA
    (`jit_compile=True`)."""
    import tensorflow as tf

    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # private module moved: assume XLA, the safe choice
        return True
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


@functools.cache
def _tf_runs_on_cpu():
    import tensorflow as tf

    return not any(tf.config.list_logical_devices(kind) for kind in ("GPU", "TPU"))
