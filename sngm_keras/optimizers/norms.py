"""The Euclidean norm of a list of tensors, safe from over- and underflow."""

from keras import ops

# Below this float32 sum of squares (or where it overflows) `sqrt(sum t^2)`
# loses precision or becomes Inf, so the norm is taken again, scaled.
_SUM_OF_SQUARES_FLOOR = 1e-30


def global_norm(tensors):
    """`sqrt(sum t^2)` over a list of tensors, a float32 scalar.

    Gradients of 1e30 or 1e-30 still give the right norm: where the plain
    float32 sum of squares under- or overflows, the norm is recomputed as
    `peak * ||t / peak||` with `peak = max|t|` (a second pass, on such steps
    only). NaN or Inf anywhere gives a non-finite result."""
    tensors = [ops.cast(t, "float32") for t in tensors]
    sum_of_squares = sum(ops.sum(ops.square(t)) for t in tensors)

    def rescued():
        peak = ops.max(ops.stack([ops.max(ops.abs(t)) for t in tensors]))
        peak = ops.where(peak > 0, peak, ops.ones_like(peak))
        return peak * ops.sqrt(sum(ops.sum(ops.square(t / peak)) for t in tensors))

    in_range = ops.logical_and(sum_of_squares > _SUM_OF_SQUARES_FLOOR, ops.isfinite(sum_of_squares))
    return ops.cond(in_range, lambda: ops.sqrt(sum_of_squares), rescued)
