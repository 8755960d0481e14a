"""The gradient noise scale B_simple, measured from the micro-batches.

McCandlish, Kaplan, Amodei et al., "An Empirical Model of Large-Batch
Training" (arXiv:1812.06162), Appendix A: with |g_small|^2 the squared norm of
a gradient over `small` examples and |G_big|^2 that over `big` examples of the
same step, E|g_n|^2 = |G|^2 + tr(Sigma) / n gives the unbiased estimates

    |G|^2    ~= (big |G_big|^2 - small |g_small|^2) / (big - small)
    tr(Sigma) ~= (|g_small|^2 - |G_big|^2) / (1 / small - 1 / big)

of the true gradient's squared norm and of the trace of the per-example
gradient covariance, and B_simple = tr(Sigma) / |G|^2. `MicroBatchModel` has
both sizes on every step: the micro-batch (`small`, |g_small|^2 averaged over
all micro-batches of all replicas) and the whole step (`big` = B, after the
all-reduce).

One step's estimates are noisy (|G|^2 is a small difference of two large
numbers when B is below the noise scale, and may come out negative), so the
metric keeps exponential moving averages of both and reports their ratio, as
the paper does. The default decay 0.99 averages about the last 100 steps (the
EMA's variance is (1 - decay) / (1 + decay) = 1/199 of one step's), short
against the thousands of steps over which the noise scale drifts as the loss
falls; the averages are bias-corrected, so the first steps give the plain
mean of the steps so far rather than a value pulled towards zero.
"""

import math

import keras
from keras import ops

from sngm_keras.checks import check_range

NOISE_SCALE_KEYS = ("gradient_noise_scale", "gradient_sq_norm_ema", "gradient_variance_ema")


def estimate(small_sq_norm, big_sq_norm, small, big):
    """Unbiased (|G|^2, tr(Sigma)) from the mean |g_small|^2 and |G_big|^2 of one step."""
    if isinstance(small, (int, float)) and isinstance(big, (int, float)) and not 0 < small < big:
        raise ValueError(f"need two batch sizes 0 < small < big, got {small} and {big}")
    small = ops.cast(small, "float32") if not isinstance(small, (int, float)) else float(small)
    big = ops.cast(big, "float32") if not isinstance(big, (int, float)) else float(big)
    sq_norm = (big * big_sq_norm - small * small_sq_norm) / (big - small)
    trace = (small_sq_norm - big_sq_norm) / (1.0 / small - 1.0 / big)
    return sq_norm, trace


def sum_of_squares(tensors):
    """sum_i |t_i|^2 in float32."""
    return ops.sum(ops.stack([ops.sum(ops.square(ops.cast(t, "float32"))) for t in tensors]))


@keras.saving.register_keras_serializable(package="sngm_keras")
class GradientNoiseScale(keras.metrics.Metric):
    """EMAs of the per-step |G|^2 and tr(Sigma) estimates, and their ratio B_simple.

    `result()` is `{"gradient_noise_scale": B_simple, "gradient_sq_norm_ema":
    |G|^2, "gradient_variance_ema": tr(Sigma)}`, or `{}` (no metric at all)
    while `measured` is False: the train step sets it when it traces, False
    when the step has a single micro-batch on a single replica. B_simple is
    +inf while the |G|^2 average is not positive (the noise swamps the
    gradient at this batch size) and 0 before the first step.

    Its state spans the whole training: `reset_state` (called by `fit` at
    every epoch and by `evaluate`) keeps it; `restart()` clears it. A step
    whose estimates are not finite (a skipped step) leaves it unchanged.
    """

    def __init__(self, decay=0.99, name="gradient_noise_scale", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.decay = check_range("noise_scale_decay", decay, 0, 1)
        self.measured = False
        # "mean": every replica holds the same value (computed from all-reduced
        # scalars), so reading across replicas must not add them up.
        make = lambda n: self.add_variable((), "zeros", dtype="float32", aggregation="mean", name=n)
        self.sq_norm_ema = make("sq_norm_ema")
        self.trace_ema = make("trace_ema")
        self.debias = make("debias")  # 1 - decay^t after t steps: the bias correction

    def update_state(self, small_sq_norm, big_sq_norm, small, big):
        sq_norm, trace = estimate(ops.cast(small_sq_norm, "float32"), ops.cast(big_sq_norm, "float32"), small, big)
        ok = ops.logical_and(ops.isfinite(sq_norm), ops.isfinite(trace))
        decay = ops.where(ok, ops.convert_to_tensor(self.decay, "float32"), ops.ones((), "float32"))
        for variable, value in ((self.sq_norm_ema, sq_norm), (self.trace_ema, trace), (self.debias, 1.0)):
            value = ops.where(ok, value, ops.zeros((), "float32"))
            variable.assign(decay * ops.convert_to_tensor(variable) + (1.0 - decay) * value)

    def result(self):
        if not self.measured:
            return {}
        debias = ops.convert_to_tensor(self.debias)
        seen = debias > 0
        debias = ops.where(seen, debias, ops.ones((), "float32"))
        sq_norm = ops.where(seen, ops.convert_to_tensor(self.sq_norm_ema) / debias, 0.0)
        trace = ops.where(seen, ops.convert_to_tensor(self.trace_ema) / debias, 0.0)
        positive = sq_norm > 0
        scale = ops.where(positive, trace / ops.where(positive, sq_norm, 1.0), math.inf)
        return {
            "gradient_noise_scale": ops.where(seen, scale, 0.0),
            "gradient_sq_norm_ema": sq_norm,
            "gradient_variance_ema": trace,
        }

    def reset_state(self):
        pass  # the averages run over the whole training, across epochs

    def restart(self):
        for variable in self.variables:
            variable.assign(ops.zeros((), "float32"))

    def get_config(self):
        return {"decay": self.decay, "name": self.name, "dtype": self.dtype}


def steps_and_examples(noise_scale, batch_size):
    """McCandlish et al.'s eq. 2.11: at batch B, training takes about
    (1 + B_noise / B) times the minimal number of steps and (1 + B / B_noise)
    times the minimal number of examples. Returns (steps factor, examples
    factor), or None without a finite positive noise scale."""
    if noise_scale is None or not math.isfinite(noise_scale) or noise_scale <= 0:
        return None
    return 1.0 + noise_scale / batch_size, 1.0 + batch_size / noise_scale
