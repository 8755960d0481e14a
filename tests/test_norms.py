"""`norms.global_norm` against float64 references, in every form the
optimizers trace it: eager, tf.function, XLA (jit_compile) and JAX."""

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

SHAPES = [(3, 3, 64, 64), (3, 3, 64, 64), (4096, 256), (256, 10), (10, 5000), (3, 3, 16, 16), (64,), (7,)]
MODES = ["eager", "function", "xla"]
# At 1e30 the float32 sum of squares overflows and at 1e-15 and 1e-30 it
# falls below the floor, so those take the rescaled second pass.
SCALES = [1e30, 1e15, 1.0, 1e-15, 1e-30]


def arrays(scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.normal(loc=0.3, size=s)).astype("float32") for s in SHAPES]


def traced(fn, mode):
    if mode == "eager":
        return fn
    return tf.function(fn, jit_compile=(mode == "xla"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", SCALES)
def test_global_norm_in_every_range(mode, scale):
    norm = traced(norms.global_norm, mode)([tf.constant(v) for v in arrays(scale)])
    # The float32 values themselves, scaled back in float64.
    expected = reference.global_norm([v.astype(np.float64) / scale for v in arrays(scale)])
    assert float(norm) / scale == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_global_norm_of_non_finite_tensors_is_not_finite(mode, bad):
    values = arrays()
    values[3][5, 7] = bad
    assert not np.isfinite(float(traced(norms.global_norm, mode)([tf.constant(v) for v in values])))


@pytest.mark.parametrize("mode", MODES)
def test_global_norm_of_zeros_is_zero(mode):
    assert float(traced(norms.global_norm, mode)([tf.zeros(s) for s in SHAPES])) == 0.0


def test_sngm_under_xla_matches_algorithm_1_on_large_variables():
    """The whole optimizer, compiled with XLA, on large variables: equal to
    the NumPy reference of Algorithm 1."""
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
    w_ref, u_ref = reference.sngm(
        w0, lambda w, t: [x.astype(np.float64) for x in grads[t]], lambda t: 0.05, 5, 0.9, 1e-3
    )
    for a, e in zip(variables, w_ref):
        np.testing.assert_allclose(a.numpy(), e, rtol=1e-5, atol=1e-6)
    for a, e in zip(opt.momentums, u_ref):
        np.testing.assert_allclose(np.asarray(a), e, rtol=1e-5, atol=1e-6)
    assert max(float(np.abs(v.numpy() - w).max()) for v, w in zip(variables, w0)) > 1e-3


JAX_SCRIPT = r"""
import json, sys, numpy as np
import jax
from sngm_keras.optimizers import norms
shapes = [tuple(s) for s in json.loads(sys.argv[1])]
out = {}
for scale in json.loads(sys.argv[2]):
    rng = np.random.default_rng(0)
    ts = [jax.numpy.asarray((scale * rng.normal(loc=0.3, size=s)).astype("float32")) for s in shapes]
    out[str(scale)] = float(jax.jit(norms.global_norm)(ts))
ts[1] = ts[1].at[0, 0, 0, 0].set(float("nan"))
out["nan"] = float(jax.jit(norms.global_norm)(ts))
print(json.dumps(out))
"""


def test_jax_global_norm_matches_float64():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, json.dumps(SHAPES), json.dumps(SCALES)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    )
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for scale in SCALES:
        expected = reference.global_norm([v.astype(np.float64) / scale for v in arrays(scale)])
        assert results[str(scale)] / scale == pytest.approx(expected, rel=1e-5)
    assert not np.isfinite(results["nan"])
