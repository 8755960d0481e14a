"""The gradient the optimizers step on: the mean gradient of the whole batch
(over its micro-batches and across replicas), clipped after the all-reduce
and the accumulation, against NumPy references on a linear model with the
mean squared error, whose gradient is known in closed form; and Keras'
`gradient_accumulation_steps`, refused."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import sngm_keras
from sngm_keras.accumulation import MicroBatchModel
from sngm_keras.schedules import PolynomialWarmup
from tests import reference
from tests.helpers import ROOT, max_diff

LR, WD, MOMENTUM = 0.1, 0.1, 0.9
# Below the gradients' norms and entries, so that every clip is active.
CLIPS = {"clipnorm": 0.5, "clipvalue": 0.05, "global_clipnorm": 0.5}


def problem(n, seed=0):
    """Inputs (n, 4), targets (n, 2) and the weights [kernel, bias] of Dense(2)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = rng.normal(size=(n, 2)).astype("float32")
    return x, y, [rng.normal(size=(4, 2)).astype("float32"), rng.normal(size=2).astype("float32")]


def batches_of(x, y, batch):
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]


def mse_gradient(w, x, y):
    """Gradient of Keras' "mse" of x @ kernel + bias: the mean over the rows
    and outputs of the squared error (float64)."""
    kernel, bias = w
    r = np.asarray(x, np.float64) @ kernel + bias - y
    scale = 2.0 / r.size
    return [scale * x.T @ r, scale * r.sum(axis=0)]


def mean_of(parts):
    return [np.mean(np.stack(p), axis=0) for p in zip(*parts)]


def sum_of(parts):
    return [np.sum(np.stack(p), axis=0) for p in zip(*parts)]


def clipped(kind, grads):
    """Keras' `clipnorm`, `clipvalue` or `global_clipnorm` at CLIPS[kind]."""
    value = CLIPS[kind]
    if kind == "clipnorm":
        return [g * value / max(np.linalg.norm(g), value) for g in grads]
    if kind == "global_clipnorm":
        return [g * value / max(reference.global_norm(grads), value) for g in grads]
    return [np.clip(g, -value, value) for g in grads]


def reference_steps(method, w, batches, micro, gradient=mean_of):
    """One step per batch of SNGM or MSGD with coupled L2 (float64), on
    `gradient(parts)`, `parts` being the gradients of the batch's
    micro-batches of `micro` rows."""
    w = [np.asarray(a, np.float64) for a in w]
    u = [np.zeros_like(a) for a in w]
    for x, y in batches:
        parts = [mse_gradient(w, x[i : i + micro], y[i : i + micro]) for i in range(0, len(x), micro)]
        g = [gi + WD * wi for gi, wi in zip(gradient(parts), w)]
        if method == "sngm":
            g = [gi / reference.global_norm(g) for gi in g]
        u = [MOMENTUM * ui + gi for ui, gi in zip(u, g)]
        w = [wi - LR * ui for wi, ui in zip(w, u)]
    return w


def optimizer(method, **kwargs):
    cls = {"sngm": sngm_keras.SNGM, "msgd": sngm_keras.MSGD}[method]
    return cls(LR, momentum=MOMENTUM, weight_decay=WD, **kwargs)


def linear(w0):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.set_weights(w0)
    return model


def fit_micro_batches(method, micro, batch, steps, **kwargs):
    """`steps` updates of MicroBatchModel; its weights, the initial weights and the batches."""
    x, y, w0 = problem(batch * steps)
    model = MicroBatchModel(linear(w0), micro, noise_scale=False)
    model.compile(optimizer=optimizer(method, **kwargs), loss="mse")
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == steps
    return model.get_weights(), w0, batches_of(x, y, batch)


# -- the mean, not the sum -------------------------------------------------


def test_the_step_is_taken_on_the_mean_of_the_micro_batch_gradients():
    """SNGM with L2, batches of 32 as 4 micro-batches of 8: the step is
    Algorithm 1 on the mean gradient of the 32 examples (the paper's
    mini-batch gradient), not on the sum over the micro-batches, which the
    L2 term tells apart (g + wd w is not parallel to 4 g + wd w)."""
    weights, w0, batches = fit_micro_batches("sngm", micro=8, batch=32, steps=2)
    mean = reference_steps("sngm", w0, batches, 8)
    assert max_diff(weights, mean) < 1e-6
    assert max_diff(reference_steps("sngm", w0, batches, 8, gradient=sum_of), mean) > 1e-3
    assert max_diff(mean, w0) > 1e-2


# -- clipping --------------------------------------------------------------


@pytest.mark.parametrize("method", ["sngm", "msgd"])
@pytest.mark.parametrize("kind", sorted(CLIPS))
def test_clipping_on_one_device(kind, method):
    """`optimizer.apply`: the gradient is clipped, then L2 is added."""
    x, y, w0 = problem(64)
    batches = batches_of(x, y, 32)
    opt = optimizer(method, **{kind: CLIPS[kind]})
    variables = [keras.Variable(w) for w in w0]
    for xb, yb in batches:
        grads = mse_gradient([v.numpy().astype(np.float64) for v in variables], xb, yb)
        opt.apply([tf.constant(g, tf.float32) for g in grads], variables)
    expected = reference_steps(method, w0, batches, 32, gradient=lambda parts: clipped(kind, mean_of(parts)))
    assert max_diff([v.numpy() for v in variables], expected) < 1e-6
    assert max_diff(reference_steps(method, w0, batches, 32), expected) > 1e-3  # the clip is active


@pytest.mark.parametrize("kind", sorted(CLIPS))
def test_clipping_of_the_accumulated_gradient(kind):
    """MicroBatchModel, 4 micro-batches of 8: the clip applies to their mean,
    not to each micro-batch's gradient."""
    weights, w0, batches = fit_micro_batches("msgd", micro=8, batch=32, steps=2, **{kind: CLIPS[kind]})
    expected = reference_steps("msgd", w0, batches, 8, gradient=lambda parts: clipped(kind, mean_of(parts)))
    assert max_diff(weights, expected) < 1e-6
    each = reference_steps("msgd", w0, batches, 8, gradient=lambda parts: mean_of([clipped(kind, p) for p in parts]))
    assert max_diff(each, expected) > 1e-3


TWO_REPLICAS = r"""
import json, sys, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, sngm_keras
from tests.test_whole_gradient import CLIPS, linear, optimizer, problem
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {"replicas": strategy.num_replicas_in_sync}
x, y, w0 = problem(64)
batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True)
for kind, value in CLIPS.items():  # micro-batches of 4: 4 on each replica
    with strategy.scope():
        model = sngm_keras.MicroBatchModel(linear(w0), 4, noise_scale=False)
        model.compile(optimizer=optimizer("msgd", **{kind: value}), loss="mse")
    model.fit(batches, epochs=1, verbose=0)
    out[kind] = [w.tolist() for w in model.get_weights()]
# Decoupled decay: one finite step, then a step whose gradient is NaN.
with strategy.scope():
    model = linear(w0)
    model.compile(optimizer=sngm_keras.SNGM(0.1, weight_decay=0.1, decoupled_weight_decay=True), loss="mse")
model.fit(x[:32], y[:32], batch_size=32, epochs=1, shuffle=False, verbose=0)
out["decoupled_first"] = [w.tolist() for w in model.get_weights()]
x[40, 1] = np.nan
model.fit(x[32:], y[32:], batch_size=32, epochs=1, shuffle=False, verbose=0)
out["decoupled_skipped"] = [w.tolist() for w in model.get_weights()]
out["decoupled_skipped_steps"] = int(model.optimizer.skipped_steps.numpy())
print("RESULT", json.dumps(out))
"""


@pytest.fixture(scope="module")
def two_replicas():
    """The runs of TWO_REPLICAS: MirroredStrategy over two logical CPUs,
    configured before TensorFlow starts, so in a subprocess."""
    result = subprocess.run([sys.executable, "-c", TWO_REPLICAS], cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT ") :])
    assert out["replicas"] == 2
    return out


@pytest.mark.parametrize("kind", sorted(CLIPS))
def test_clipping_of_the_all_reduced_gradient_under_two_replicas(two_replicas, kind):
    """Two replicas, each with 4 micro-batches of 4 of a batch of 32: the
    clip applies to the all-reduced mean of all 8, not to each replica's
    part before the all-reduce (Keras' own order)."""
    x, y, w0 = problem(64)
    batches = batches_of(x, y, 32)
    expected = reference_steps("msgd", w0, batches, 4, gradient=lambda parts: clipped(kind, mean_of(parts)))
    assert max_diff(two_replicas[kind], expected) < 1e-6

    def per_replica(parts):  # each replica's gradient, of its loss scaled by 1/2, clipped, then summed
        return sum_of([clipped(kind, [g / 2 for g in mean_of(half)]) for half in (parts[:4], parts[4:])])

    assert max_diff(reference_steps("msgd", w0, batches, 4, gradient=per_replica), expected) > 1e-3


def test_decoupled_decay_is_skipped_with_the_step_under_two_replicas(two_replicas):
    x, y, w0 = problem(64)
    g = mse_gradient(w0, x[:32], y[:32])
    expected = [w * (1 - 0.1 * 0.1) - 0.1 * gi / reference.global_norm(g) for w, gi in zip(w0, g)]
    assert max_diff(two_replicas["decoupled_first"], expected) < 1e-6
    assert two_replicas["decoupled_skipped"] == two_replicas["decoupled_first"]  # bit for bit
    assert two_replicas["decoupled_skipped_steps"] == 1


# -- Keras' gradient_accumulation_steps ------------------------------------


@pytest.mark.parametrize("cls", [sngm_keras.SNGM, sngm_keras.MSGD, sngm_keras.LARS])
def test_gradient_accumulation_steps_is_refused_for_micro_batch_model(cls):
    with pytest.raises(ValueError, match=r"^gradient_accumulation_steps: .*sngm_keras\.MicroBatchModel"):
        cls(0.1, gradient_accumulation_steps=4)
    assert cls(0.1, gradient_accumulation_steps=None).gradient_accumulation_steps is None


def test_why_keras_accumulation_is_refused():
    """Keras (3.15) evaluates a learning-rate schedule at its count of
    accumulated gradients, not at `iterations`, its count of updates: with 3
    gradients an update, the paper's poly schedule would end after a third
    of the run. (The other reason, tf.distribute's refusal of an all-reduce
    inside Keras' conditional, needs several replicas.) When this fails,
    Keras has changed and the refusal may be reconsidered."""
    schedule = PolynomialWarmup(1.0, total_steps=6, power=1.0)
    opt = keras.optimizers.SGD(schedule, gradient_accumulation_steps=3)
    weight = keras.Variable(0.0)
    rates = []
    for _ in range(6):  # two updates, on a slope of 1: each moves the weight by its rate
        before = float(weight.numpy())
        opt.apply([keras.ops.ones(())], [weight])
        rates.append(before - float(weight.numpy()))
    assert int(opt.iterations.numpy()) == 2
    # The updates' rates: at 2 and 5 of 6, not at the updates 0 and 1.
    np.testing.assert_allclose([rates[2], rates[5]], [1 - 2 / 6, 1 - 5 / 6], rtol=1e-5)
