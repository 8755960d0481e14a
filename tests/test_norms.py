"""The gradient norm's fast forms against float64 references, in every form
the optimizers trace it: eager, tf.function, XLA (jit_compile) and JAX."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import sngm_keras
from sngm_keras.optimizers import norms
from tests import reference

# Large tensors of one shape (grouped and summed as matrix-vector products on
# a CPU under XLA), a large dense kernel, tensors too small or with too many
# columns for the product, and small vectors.
SHAPES = [(3, 3, 64, 64), (3, 3, 64, 64), (3, 3, 64, 64), (4096, 256), (256, 10), (10, 5000), (3, 3, 16, 16), (64,),
          (64,), (7,)]
MODES = ["eager", "function", "xla"]


def arrays(scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.normal(loc=0.3, size=s)).astype("float32") for s in SHAPES]


def traced(fn, mode):
    if mode == "eager":
        return fn
    return tf.function(fn, jit_compile=(mode == "xla"))


def float64_sum_of_squares(values):
    return sum(float(np.sum(np.square(v.astype(np.float64)))) for v in values)


@pytest.mark.parametrize("mode", MODES)
def test_sum_of_squares_matches_float64(mode):
    values = arrays()
    total = traced(lambda ts: norms.sum_of_squares(ts), mode)([tf.constant(v) for v in values])
    assert float(total) == pytest.approx(float64_sum_of_squares(values), rel=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [1e30, 1.0, 1e-30])
def test_robust_norm_in_every_range(mode, scale):
    values = arrays(scale)
    norm = traced(lambda ts: norms.robust_norm(ts), mode)([tf.constant(v) for v in values])
    assert float(norm) / scale == pytest.approx(reference.global_norm(arrays()), rel=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_robust_norm_of_non_finite_gradient_is_not_finite(mode):
    values = arrays()
    values[3][5, 7] = np.nan
    norm = traced(lambda ts: norms.robust_norm(ts), mode)([tf.constant(v) for v in values])
    assert not np.isfinite(float(norm))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [1e30, 1.0, 1e-30])
def test_guarded_norm_passes_finite_tensors_through(mode, scale):
    values = arrays(scale)
    norm, out, divisor = traced(lambda ts: norms.guarded_norm(ts), mode)([tf.constant(v) for v in values])
    assert float(norm) / scale == pytest.approx(reference.global_norm(arrays()), rel=1e-5)
    assert float(divisor) == 1.0
    for o, v in zip(out, values):
        np.testing.assert_array_equal(np.asarray(o), v)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [1e30, 1.0, 1e-30])
def test_guarded_norm_rescales_only_out_of_range_tensors(mode, scale):
    values = arrays(scale)
    norm, out, divisor = traced(lambda ts: norms.guarded_norm(ts, rescale=True), mode)([tf.constant(v) for v in values])
    peak = max(float(np.max(np.abs(v))) for v in values)
    expected_divisor = 1.0 if scale == 1.0 else peak
    assert float(divisor) == pytest.approx(expected_divisor, rel=1e-6)
    assert float(norm) / scale == pytest.approx(reference.global_norm(arrays()), rel=1e-5)
    if scale != 1.0:  # rescaled: the norm is between 1 and sqrt(size)
        assert 1.0 <= reference.global_norm([np.asarray(o) for o in out]) <= np.sqrt(sum(v.size for v in values))
    for o, v in zip(out, values):
        np.testing.assert_allclose(np.asarray(o), v / expected_divisor, rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("rescale", [False, True])
def test_guarded_norm_zeroes_non_finite_tensors(mode, bad, rescale):
    values = arrays()
    values[6][1, 2, 3, 4] = bad
    norm, out, _ = traced(lambda ts: norms.guarded_norm(ts, rescale=rescale), mode)([tf.constant(v) for v in values])
    assert not np.isfinite(float(norm))
    assert [tuple(o.shape) for o in out] == SHAPES
    assert all(not np.any(np.asarray(o)) for o in out)


def test_xla_context_is_detected():
    # The fast form is chosen by this check; if TensorFlow's private helper
    # stopped answering, every path would silently take the XLA forms.
    assert tf.function(lambda: tf.constant(norms._in_tf_xla_context()), jit_compile=True)().numpy()
    assert not tf.function(lambda: tf.constant(norms._in_tf_xla_context()))().numpy()
    assert not norms._in_tf_xla_context()


@pytest.mark.parametrize(
    ("shape", "columns"),
    [
        ((3, 3, 64, 64), 64),  # trailing dimension, already >= 64
        ((3, 3, 16, 32), None),  # 4,608 elements: too small to pay off
        ((3, 3, 128, 16), 2048),  # 16 < 64, so 128 * 16
        ((4096, 256), 256),
        ((2048, 1000), 1000),
        ((10, 5000), None),  # 5,000 columns: rows would sum too many floats in sequence
        ((100000,), None),
    ],
)
def test_matvec_columns(shape, columns):
    assert norms.matvec_columns(shape) == columns


def test_sngm_under_xla_matches_algorithm_1_on_large_variables():
    """The whole optimizer, compiled with XLA, on variables that take the
    grouped matrix-vector norm: equal to the NumPy reference of Algorithm 1."""
    shapes = [(3, 3, 64, 64), (3, 3, 64, 64), (4096, 256), (256,)]
    rng = np.random.default_rng(3)
    w0 = [rng.normal(scale=0.1, size=s).astype("float32") for s in shapes]
    grads = [[rng.normal(loc=0.01, size=s).astype("float32") for s in shapes] for _ in range(5)]
    variables = [keras.Variable(w) for w in w0]
    opt = sngm_keras.SNGM(0.05, momentum=0.9, weight_decay=1e-3)
    opt.build(variables)
    step = tf.function(lambda g: opt.apply(g, variables), jit_compile=True)
    for g in grads:
        step([tf.constant(x) for x in g])
    w_ref, u_ref = reference.sngm(w0, lambda w, t: [x.astype(np.float64) for x in grads[t]], lambda t: 0.05, 5, 0.9, 1e-3)
    for a, e in zip(variables, w_ref):
        np.testing.assert_allclose(a.numpy(), e, rtol=1e-5, atol=1e-6)
    for a, e in zip(opt.momentum_buffers(), u_ref):
        np.testing.assert_allclose(np.asarray(a), e, rtol=1e-5, atol=1e-6)
    assert max(float(np.abs(v.numpy() - w).max()) for v, w in zip(variables, w0)) > 1e-3


JAX_SCRIPT = r"""
import json, sys, numpy as np
import jax
from sngm_keras.optimizers import norms
shapes = [tuple(s) for s in json.loads(sys.argv[1])]
out = {}
for scale in (1e30, 1.0, 1e-30):
    rng = np.random.default_rng(0)
    ts = [jax.numpy.asarray((scale * rng.normal(loc=0.3, size=s)).astype("float32")) for s in shapes]
    out[str(scale)] = {
        "sum_of_squares": float(jax.jit(norms.sum_of_squares)(ts)) if scale == 1.0 else None,
        "norm": float(jax.jit(norms.robust_norm)(ts)),
    }
    guarded_norm, passed, divisor = jax.jit(norms.guarded_norm)(ts)
    out[str(scale)]["guarded_norm"] = float(guarded_norm)
    out[str(scale)]["passed_unchanged"] = all(bool((p == t).all()) for p, t in zip(passed, ts)) and float(divisor) == 1
    _, rescaled, divisor = jax.jit(lambda ts: norms.guarded_norm(ts, rescale=True))(ts)
    peak = max(float(abs(t).max()) for t in ts)
    out[str(scale)]["rescaled_by_peak"] = float(divisor) == (1.0 if scale == 1.0 else peak) and all(
        np.allclose(np.asarray(r), np.asarray(t) / float(divisor), rtol=1e-6, atol=0) for r, t in zip(rescaled, ts))
ts[1] = ts[1].at[0, 0, 0, 0].set(float("nan"))
guarded_norm, zeroed, _ = jax.jit(norms.guarded_norm)(ts)
out["nan"] = {"norm_finite": bool(np.isfinite(float(guarded_norm))), "all_zero": all(not bool(z.any()) for z in zeroed)}
print(json.dumps(out))
"""


def test_jax_forms_match_float64():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", JAX_SCRIPT, json.dumps(SHAPES)], env=env, capture_output=True, text=True,
                         check=True, cwd=root)
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["1.0"]["sum_of_squares"] == pytest.approx(float64_sum_of_squares(arrays()), rel=1e-6)
    for scale in (1e30, 1.0, 1e-30):
        assert results[str(scale)]["norm"] / scale == pytest.approx(reference.global_norm(arrays()), rel=1e-5)
        assert results[str(scale)]["guarded_norm"] / scale == pytest.approx(reference.global_norm(arrays()), rel=1e-5)
        assert results[str(scale)]["passed_unchanged"]
        assert results[str(scale)]["rescaled_by_peak"]
    assert results["nan"] == {"norm_finite": False, "all_zero": True}
