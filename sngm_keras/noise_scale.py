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
DEFAULT_DECAY = 0.99

# The reading of a run's estimates (`updates_to_settle`, `change_over_window`,
# `trend`, `suggested_batch`). Settled: the last estimate and the one a full
# EMA window before it each average a full window, so comparing them shows
# how B_simple moves rather than how the first steps scatter.
SETTLING_WINDOWS = 2
# A change over one window within a factor 1.2 either way is "level": in the
# closed-form problem of tests/test_noise_scale.py the one-window average of a
# steady B_simple scatters by 1-3.5%, the ratio of two a window apart by
# 1.5-4.5% (a NumPy simulation), so a 20% move is drift, not that scatter.
LEVEL_FACTOR = 1.2


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

    def __init__(self, decay=DEFAULT_DECAY, name="gradient_noise_scale", dtype="float32"):
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


def ema_window(decay=DEFAULT_DECAY):
    """The updates an EMA of `decay` averages over, 1 / (1 - decay): 100 at 0.99."""
    return round(1.0 / (1.0 - decay))


def updates_to_settle(decay=DEFAULT_DECAY):
    """The updates after which the estimate is settled: `SETTLING_WINDOWS` EMA windows."""
    return SETTLING_WINDOWS * ema_window(decay)


def change_over_window(epochs, decay=DEFAULT_DECAY):
    """How B_simple moved over the last EMA window of a run: `epochs` holds
    (updates, B_simple) at the end of each epoch, in order; returns (ratio
    of the last value to the earlier one, updates between them), the earlier
    one being the last epoch's at least a window before the end. None
    without such an epoch; values not finite and positive are left out."""
    finite = [(updates, scale) for updates, scale in epochs if 0 < scale < math.inf]
    if not finite:
        return None
    end_updates, end_scale = finite[-1]
    earlier = [(updates, scale) for updates, scale in finite if updates <= end_updates - ema_window(decay)]
    if not earlier:
        return None
    updates, scale = earlier[-1]
    return end_scale / scale, end_updates - updates


def trend(ratio):
    """Whether B_simple is "rising", "falling" or "level", from its ratio over a window."""
    if ratio >= LEVEL_FACTOR:
        return "rising"
    if ratio <= 1.0 / LEVEL_FACTOR:
        return "falling"
    return "level"


def suggested_batch(noise_scale):
    """B_simple to the nearest power of two (in ratio), at least 1: McCandlish
    et al.'s critical batch, the best trade of steps against examples (at
    it, eq. 2.11 gives twice the minimal number of each), as B_simple
    estimates it (exactly for a Hessian that is a multiple of the identity)."""
    return 2 ** max(0, round(math.log2(noise_scale)))
