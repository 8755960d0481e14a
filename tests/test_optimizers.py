"""SNGM, MSGD and LARS against NumPy references and the paper's claims."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import sngm_keras
from sngm_keras.schedules import PolynomialWarmup
from tests import reference

SHAPES = [(3, 4), (4,), (2, 2, 3)]


def initial_weights(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype("float32") for s in SHAPES]


def quadratic_grad(weights, t):
    """Gradient of a separable quadratic plus a step-dependent linear term."""
    return [(1.0 + i) * w + np.cos(t + i + np.arange(w.size).reshape(w.shape)) for i, w in enumerate(weights)]


def run_keras(optimizer, steps, weights=None, grad_fn=quadratic_grad):
    variables = [keras.Variable(w) for w in (weights or initial_weights())]
    for t in range(steps):
        grads = grad_fn([np.asarray(v.numpy(), np.float64) for v in variables], t)
        optimizer.apply([keras.ops.convert_to_tensor(g, "float32") for g in grads], variables)
    return [v.numpy() for v in variables], [np.asarray(u) for u in optimizer.momentums]


def assert_close(actual, expected, rtol=1e-5, atol=1e-6):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def poly(lr0, total, power):
    return lambda t: lr0 * (1 - t / total) ** power


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("scheduled", [False, True])
def test_sngm_matches_algorithm_1(weight_decay, scheduled):
    steps = 25
    if scheduled:
        lr, lr_fn = PolynomialWarmup(0.2, total_steps=30, power=1.1), poly(0.2, 30, 1.1)
    else:
        lr, lr_fn = 0.2, (lambda t: 0.2)
    opt = sngm_keras.SNGM(learning_rate=lr, momentum=0.9, weight_decay=weight_decay)
    w, u = run_keras(opt, steps)
    w_ref, u_ref = reference.sngm(initial_weights(), quadratic_grad, lr_fn, steps, 0.9, weight_decay)
    assert_close(w, w_ref)
    assert_close(u, u_ref)
    assert int(opt.iterations.numpy()) == steps


def test_sngm_layerwise_matches_reference():
    opt = sngm_keras.SNGM(learning_rate=0.1, momentum=0.8, layerwise=True)
    w, u = run_keras(opt, 20)
    w_ref, u_ref = reference.sngm(initial_weights(), quadratic_grad, lambda t: 0.1, 20, 0.8, layerwise=True)
    assert_close(w, w_ref)
    assert_close(u, u_ref)


def test_sngm_differs_from_layerwise():
    # The whole-gradient norm is not the per-layer one: a guard on the test above.
    w_global, _ = run_keras(sngm_keras.SNGM(learning_rate=0.1), 5)
    w_layer, _ = run_keras(sngm_keras.SNGM(learning_rate=0.1, layerwise=True), 5)
    assert max(np.max(np.abs(a - b)) for a, b in zip(w_global, w_layer)) > 1e-3


def test_sngm_weight_decay_exclusion():
    opt = sngm_keras.SNGM(learning_rate=0.1, weight_decay=0.05)
    variables = [keras.Variable(w, name=n) for w, n in zip(initial_weights(), ["kernel", "bias", "gamma"])]
    opt.exclude_from_weight_decay(var_names=["bias"])
    for t in range(10):
        grads = quadratic_grad([v.numpy().astype(np.float64) for v in variables], t)
        opt.apply([keras.ops.convert_to_tensor(g, "float32") for g in grads], variables)

    def grad_with_partial_decay(w, t):
        g = quadratic_grad(w, t)
        return [gi + (0.05 * wi if i != 1 else 0.0) for i, (gi, wi) in enumerate(zip(g, w))]

    w_ref, _ = reference.sngm(initial_weights(), grad_with_partial_decay, lambda t: 0.1, 10, 0.9)
    assert_close([v.numpy() for v in variables], w_ref)


def test_decoupled_weight_decay_is_keras_semantics():
    opt = sngm_keras.SNGM(learning_rate=0.1, weight_decay=0.01, decoupled_weight_decay=True)
    w, _ = run_keras(opt, 10)
    # Reference: w <- w - lr*wd*w first, then the SNGM step without L2.
    ref = [np.array(a, np.float64) for a in initial_weights()]
    u = [np.zeros_like(a) for a in ref]
    for t in range(10):
        g = quadratic_grad(ref, t)
        ref = [wi - 0.1 * 0.01 * wi for wi in ref]
        n = reference.global_norm(g)
        u = [0.9 * ui + gi / n for ui, gi in zip(u, g)]
        ref = [wi - 0.1 * ui for wi, ui in zip(ref, u)]
    assert_close(w, ref)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_msgd_matches_pytorch_sgd(weight_decay):
    lr = PolynomialWarmup(0.05, total_steps=40, power=2.0)
    w, u = run_keras(sngm_keras.MSGD(lr, momentum=0.9, weight_decay=weight_decay), 20)
    w_ref, u_ref = reference.msgd(initial_weights(), quadratic_grad, poly(0.05, 40, 2.0), 20, 0.9, weight_decay)
    assert_close(w, w_ref)
    assert_close(u, u_ref)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_lars_matches_reference(weight_decay):
    lr = PolynomialWarmup(2.0, total_steps=30, power=1.1)
    w, u = run_keras(sngm_keras.LARS(lr, momentum=0.9, weight_decay=weight_decay, trust_coefficient=0.02), 20)
    w_ref, u_ref = reference.lars(initial_weights(), quadratic_grad, poly(2.0, 30, 1.1), 20, 0.9, weight_decay, 0.02)
    assert_close(w, w_ref)
    assert_close(u, u_ref)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_pytorch_lars_matches_reference_and_freezes_zero_weights(weight_decay):
    # A kernel, a zero-initialised offset (as BatchNorm's beta and biases start) and a non-zero scale.
    weights = [initial_weights()[0], np.zeros(4, "float32"), np.full(3, 1.5, "float32")]
    lr = PolynomialWarmup(2.0, total_steps=30, power=1.1)
    opt = sngm_keras.LARS(lr, momentum=0.9, weight_decay=weight_decay, trust_coefficient=0.02, pytorch_lars=True)
    w, u = run_keras(opt, 20, weights=weights)
    w_ref, u_ref = reference.lars(
        weights, quadratic_grad, poly(2.0, 30, 1.1), 20, 0.9, weight_decay, 0.02, pytorch_lars=True
    )
    assert_close(w, w_ref)
    assert_close(u, u_ref)
    np.testing.assert_array_equal(w[1], 0.0)  # a zero norm gives a zero local rate: never moves
    assert np.max(np.abs(w[2] - 1.5)) > 1e-3  # rank-1 variables are adapted too
    default, _ = run_keras(
        sngm_keras.LARS(
            lr, momentum=0.9, weight_decay=weight_decay, trust_coefficient=0.02, exclude_bias_and_norm=False
        ),
        20,
        weights=weights,
    )
    assert np.max(np.abs(default[1])) > 1e-3  # the default's trust of 1 moves it
    config = opt.get_config()
    assert config["pytorch_lars"] is True and config["exclude_bias_and_norm"] is False


def zero_grad(w, t):
    return [np.zeros_like(a) for a in w]


def scaled_grad(scale):
    return lambda w, t: [scale * g for g in quadratic_grad(w, t)]


# Gradient sequences (one function per step) whose norm jumps by up to 1e63
# or falls to zero: the float32 norm must neither over- nor underflow.
NORM_JUMPS = {
    "alternating_1e15_1e-15": [scaled_grad(10.0 ** (15 * (-1) ** t)) for t in range(12)],
    "alternating_1e30_1e-33": [scaled_grad(1e30 if t % 2 else 1e-33) for t in range(12)],
    "zero_then_1e9": [zero_grad] + [scaled_grad(1e9)] * 5,
    "zero_steps_then_normal": [zero_grad] * 3 + [quadratic_grad] * 7,
    "normal_zero_1e9": [
        quadratic_grad,
        zero_grad,
        zero_grad,
        scaled_grad(1e9),
        quadratic_grad,
        scaled_grad(1e-25),
        scaled_grad(1e20),
    ],
}


@pytest.mark.parametrize("sequence", sorted(NORM_JUMPS))
def test_sngm_exact_across_gradient_norm_jumps(sequence):
    steps = NORM_JUMPS[sequence]

    def grad_fn(w, t):
        return steps[t](w, t)

    w, u = run_keras(sngm_keras.SNGM(learning_rate=0.1, momentum=0.9), len(steps), grad_fn=grad_fn)
    w_ref, u_ref = reference.sngm(initial_weights(), grad_fn, lambda t: 0.1, len(steps), 0.9)
    assert_close(w, w_ref)
    assert_close(u, u_ref)


@pytest.mark.parametrize("scale", [1e30, 1e-20])
def test_lemma2_momentum_bound(scale):
    beta = 0.9
    opt = sngm_keras.SNGM(learning_rate=1.0, momentum=beta)
    variables = [keras.Variable(w) for w in initial_weights()]
    rng = np.random.default_rng(1)
    norms = []
    for _ in range(30):
        raw = [rng.normal(size=s) for s in SHAPES]
        opt.apply([keras.ops.convert_to_tensor(scale * r, "float32") for r in raw], variables)
        norms.append(reference.global_norm([np.asarray(u) for u in opt.momentums]))
    assert np.all(np.isfinite(norms))
    assert max(norms) <= 1 / (1 - beta) * (1 + 1e-5)
    # Each normalized step is a unit vector, so the first momentum has norm 1.
    assert norms[0] == pytest.approx(1.0, rel=1e-5)
    # The norm itself neither overflows nor underflows in float32.
    assert float(opt.gradient_norm.numpy()) / scale == pytest.approx(reference.global_norm(raw), rel=1e-5)
    assert int(opt.skipped_steps.numpy()) == 0


def ill_conditioned(steps, optimizer):
    """f(w) = 1/2 sum lambda_i w_i^2 with lambda from 1 to 1e4 (L = 1e4)."""
    lam = np.logspace(0, 4, 20)
    w = keras.Variable(np.ones(20, "float32"))
    grad_norms, w_norms = [], []
    for _ in range(steps):
        g = lam * w.numpy()
        grad_norms.append(np.linalg.norm(g))
        w_norms.append(np.linalg.norm(w.numpy()))
        if not np.isfinite(w_norms[-1]) or w_norms[-1] > 1e8:
            break
        optimizer.apply([keras.ops.convert_to_tensor(g, "float32")], [w])
    return np.array(grad_norms), np.array(w_norms)


def test_theorem1_sngm_converges_where_msgd_diverges():
    lr = 0.01  # 26x the largest stable rate of momentum SGD, 2(1+beta)/L
    _, w_sgd = ill_conditioned(300, keras.optimizers.SGD(lr, momentum=0.9))
    assert not np.all(np.isfinite(w_sgd)) or w_sgd[-1] > 1e8
    g_sngm, w_sngm = ill_conditioned(600, sngm_keras.SNGM(PolynomialWarmup(lr, 600, power=2.0), momentum=0.9))
    # Lemma 2: each step moves w by at most lr/(1-beta).
    assert w_sngm.max() <= w_sngm[0] + 600 * lr / (1 - 0.9)
    assert g_sngm.min() < 1e-3 * g_sngm[0]
    assert g_sngm[-1] < 1e-2 * g_sngm[0]


def quartic(steps, optimizer, w0=5.0):
    """f(w) = sum w^4 / 4: smooth only in the relaxed sense (L grows with |w|)."""
    w = keras.Variable(np.full(4, w0, "float32"))
    for _ in range(steps):
        g = w.numpy() ** 3
        if not np.all(np.isfinite(g)) or np.abs(w.numpy()).max() > 1e6:
            return np.inf
        optimizer.apply([keras.ops.convert_to_tensor(g, "float32")], [w])
    return float(np.abs(w.numpy()).max())


def test_relaxed_smooth_quartic():
    assert quartic(100, sngm_keras.MSGD(0.1, momentum=0.9)) == np.inf
    final = quartic(400, sngm_keras.SNGM(PolynomialWarmup(0.1, 400, power=2.0), momentum=0.9))
    assert final < 0.1


def test_zero_gradient_gives_no_nan():
    opt = sngm_keras.SNGM(0.1)
    w0 = initial_weights()
    w, u = run_keras(opt, 3, grad_fn=lambda w, t: [np.zeros_like(a) for a in w])
    assert_close(w, w0, rtol=0, atol=0)
    assert all(np.all(m == 0) for m in u)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("cls", [sngm_keras.SNGM, sngm_keras.MSGD, sngm_keras.LARS])
def test_non_finite_step_is_skipped(cls, bad, weight_decay):
    opt = cls(0.1, weight_decay=weight_decay)
    variables = [keras.Variable(w) for w in initial_weights()]
    good = [keras.ops.convert_to_tensor(g, "float32") for g in quadratic_grad(initial_weights(), 0)]
    opt.apply(good, variables)
    before = [v.numpy().copy() for v in variables], [m.numpy().copy() for m in opt.momentums]
    poisoned = [g.numpy().copy() for g in good]
    poisoned[1][2] = bad
    opt.apply([keras.ops.convert_to_tensor(g) for g in poisoned], variables)
    assert_close([v.numpy() for v in variables], before[0], rtol=0, atol=0)
    assert_close([m.numpy() for m in opt.momentums], before[1], rtol=0, atol=0)
    assert int(opt.skipped_steps.numpy()) == 1
    opt.apply(good, variables)
    assert all(np.all(np.isfinite(v.numpy())) for v in variables)
    assert int(opt.skipped_steps.numpy()) == 1


def decoupled_reference_step(cls, w, u, g, lr, weight_decay, momentum=0.9):
    """Keras' decoupled decay, w <- w (1 - lr wd), then the rule on the bare
    gradient (float64)."""
    g = [np.asarray(x, np.float64) for x in g]
    direction = [x / reference.global_norm(g) for x in g] if cls is sngm_keras.SNGM else g
    u = [momentum * ui + di for ui, di in zip(u, direction)]
    w = [np.asarray(wi, np.float64) * (1 - lr * weight_decay) - lr * ui for wi, ui in zip(w, u)]
    return w, u


def poisoned(grads, bad):
    grads = [np.array(g, np.float32) for g in grads]
    grads[1][2] = bad
    return grads


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("cls", [sngm_keras.SNGM, sngm_keras.MSGD])
def test_a_skipped_step_does_not_decay_the_weights_either(cls, bad, compiled):
    """Decoupled weight decay (Keras': applied apart from `update_step`) is
    part of the step: a step whose gradient holds NaN or Inf leaves the
    weights bit for bit as they were; a finite step still decays them."""
    import tensorflow as tf

    lr, wd = 0.1, 0.1
    opt = cls(lr, weight_decay=wd, decoupled_weight_decay=True)
    variables = [keras.Variable(w) for w in initial_weights()]
    opt.build(variables)
    step = lambda grads: opt.apply(grads, variables)
    if compiled:
        step = tf.function(step)
    apply = lambda grads: step([tf.constant(g) for g in grads])
    good = [g.astype("float32") for g in quadratic_grad(initial_weights(), 0)]
    zeros = [np.zeros(s) for s in SHAPES]

    apply(good)
    w_ref, u_ref = decoupled_reference_step(cls, initial_weights(), zeros, good, lr, wd)
    assert_close([v.numpy() for v in variables], w_ref, rtol=1e-6, atol=1e-7)
    before = [v.numpy().copy() for v in variables], [np.array(m) for m in opt.momentums]

    apply(poisoned(good, bad))
    for variable, weight in zip(variables, before[0]):
        np.testing.assert_array_equal(variable.numpy(), weight)
    for momentum, value in zip(opt.momentums, before[1]):
        np.testing.assert_array_equal(np.array(momentum), value)
    assert int(opt.skipped_steps.numpy()) == 1

    apply(good)
    w_ref, u_ref = decoupled_reference_step(cls, before[0], before[1], good, lr, wd)
    assert_close([v.numpy() for v in variables], w_ref, rtol=1e-6, atol=1e-7)
    assert_close([np.array(m) for m in opt.momentums], u_ref, rtol=1e-6, atol=1e-7)
    assert int(opt.skipped_steps.numpy()) == 1 and int(opt.iterations.numpy()) == 3


@pytest.mark.parametrize(
    "cls, kwargs, name",
    [
        (sngm_keras.SNGM, {"learning_rate": -0.1}, "learning_rate"),
        (sngm_keras.SNGM, {"learning_rate": 0.0}, "learning_rate"),
        (sngm_keras.SNGM, {"learning_rate": "fast"}, "learning_rate"),
        (sngm_keras.SNGM, {"momentum": 1.0}, "momentum"),
        (sngm_keras.SNGM, {"momentum": -0.1}, "momentum"),
        (sngm_keras.SNGM, {"weight_decay": -1e-4}, "weight_decay"),
        (sngm_keras.SNGM, {"epsilon": 0.0}, "epsilon"),
        (sngm_keras.MSGD, {"momentum": 1.5}, "momentum"),
        (sngm_keras.LARS, {"weight_decay": -1.0}, "weight_decay"),
        (sngm_keras.LARS, {"trust_coefficient": 0.0}, "trust_coefficient"),
        (sngm_keras.LARS, {"epsilon": -1.0}, "epsilon"),
        (sngm_keras.SNGM, {"clipnorm": 1.0, "not_an_argument": 1}, "not_an_argument"),
        (sngm_keras.MSGD, {"epsilon": 1e-8}, "epsilon"),  # MSGD divides by nothing
        (sngm_keras.LARS, {"decoupled_weight_decay": True}, "decoupled_weight_decay"),  # LARS has none
    ],
)
def test_bad_hyperparameters_rejected(cls, kwargs, name):
    # Keras' base optimizer names unknown keywords in a ValueError too.
    with pytest.raises((ValueError, TypeError), match=name):
        cls(**kwargs)


def test_epsilon_is_the_floor_of_the_divided_norm():
    # SNGM: a gradient whose norm is below epsilon is divided by epsilon.
    opt = sngm_keras.SNGM(1.0, momentum=0.0, epsilon=1e-3)
    w = keras.Variable(np.zeros(4, "float32"))
    opt.apply([keras.ops.convert_to_tensor(np.full(4, 1e-4, "float32"))], [w])
    np.testing.assert_allclose(w.numpy(), -0.1, rtol=1e-6)
    # LARS: the trust ratio's denominator ||g|| + wd ||w|| is floored at epsilon.
    opt = sngm_keras.LARS(1.0, momentum=0.0, trust_coefficient=1.0, epsilon=1e-2, exclude_bias_and_norm=False)
    w = keras.Variable(np.full(4, 2.0, "float32"))
    opt.apply([keras.ops.convert_to_tensor(np.full(4, 1e-4, "float32"))], [w])
    # trust = ||w|| / max(||g||, 1e-2) = 4 / 1e-2; step = trust * g = 400 * 1e-4
    np.testing.assert_allclose(w.numpy(), 2.0 - 0.04, rtol=1e-5)
    assert "epsilon" not in sngm_keras.MSGD(0.1).get_config()


def test_one_weight_decay_attribute_per_meaning():
    coupled = sngm_keras.SNGM(0.1, weight_decay=1e-4)
    decoupled = sngm_keras.SNGM(0.1, weight_decay=1e-4, decoupled_weight_decay=True)
    lars = sngm_keras.LARS(0.1, weight_decay=1e-4)
    assert (coupled.l2_weight_decay, coupled.weight_decay) == (1e-4, None)
    assert (decoupled.l2_weight_decay, decoupled.weight_decay) == (0.0, 1e-4)
    assert (lars.l2_weight_decay, lars.weight_decay) == (1e-4, None)
    assert [o.get_config()["weight_decay"] for o in (coupled, decoupled, lars)] == [1e-4] * 3
    assert "decoupled_weight_decay" not in lars.get_config()


def test_update_hook_sees_the_whole_gradient(monkeypatch):
    """Pins Keras' private hook `_backend_update_step`, where the optimizers
    all-reduce the gradient and take the whole step (norm included). If
    Keras stops calling it, this fails (and the step would fall to Keras'
    per-variable `update_step`, which these optimizers do not define)."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the TensorFlow step; JAX's: test_a_skipped_step_does_not_decay_the_weights_either_on_jax")
    from sngm_keras.optimizers.base import ReducedGradientOptimizer

    calls = []
    original = ReducedGradientOptimizer._backend_update_step

    def spy(self, grads, trainable_variables, learning_rate):
        calls.append(len(grads))
        return original(self, grads, trainable_variables, learning_rate)

    monkeypatch.setattr(ReducedGradientOptimizer, "_backend_update_step", spy)
    model = tiny_model()
    x, y = tiny_data()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    expected = reference.global_norm([g.numpy() for g in tape.gradient(loss, model.trainable_variables)])
    model.compile(optimizer=sngm_keras.SNGM(0.5), loss=loss_fn)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    assert calls and set(calls) == {len(model.trainable_variables)}  # once per trace
    assert float(model.optimizer.gradient_norm.numpy()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("cls", [sngm_keras.SNGM, sngm_keras.MSGD, sngm_keras.LARS])
def test_config_round_trip(cls):
    opt = cls(PolynomialWarmup(0.3, 100, power=2.0, warmup_steps=5), momentum=0.95, weight_decay=1e-4)
    config = opt.get_config()
    clone = cls.from_config(json.loads(json.dumps(keras.saving.serialize_keras_object(opt)))["config"])
    assert clone.get_config() == config
    assert config["weight_decay"] == 1e-4 and config["momentum"] == 0.95
    assert isinstance(keras.optimizers.deserialize(keras.optimizers.serialize(opt)), cls)


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(3)])


def tiny_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, size=n)


def compile_fit(model, optimizer, jit=False, epochs=2):
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit
    )
    x, y = tiny_data()
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return model


def test_jit_compile_on_and_off_agree():
    eager = compile_fit(tiny_model(), sngm_keras.SNGM(0.5, weight_decay=1e-3), jit=False)
    xla = compile_fit(tiny_model(), sngm_keras.SNGM(0.5, weight_decay=1e-3), jit=True)
    assert_close(eager.get_weights(), xla.get_weights(), rtol=1e-5, atol=1e-6)
    assert float(np.abs(eager.get_weights()[0] - tiny_model().get_weights()[0]).max()) > 1e-3


def test_save_load_round_trip_trains_identically(tmp_path):
    model = compile_fit(tiny_model(), sngm_keras.SNGM(PolynomialWarmup(0.5, 50, power=1.1), weight_decay=1e-3))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, sngm_keras.SNGM)
    assert int(loaded.optimizer.iterations.numpy()) == 8
    assert_close([m.numpy() for m in loaded.optimizer.momentums], [m.numpy() for m in model.optimizer.momentums], 0, 0)
    assert np.any(loaded.optimizer.momentums[0].numpy() != 0)
    x, y = tiny_data(seed=1)
    for m in (model, loaded):
        m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert_close(loaded.get_weights(), model.get_weights(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = compile_fit(tiny_model(), sngm_keras.SNGM(0.5))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    opt = model.optimizer
    if policy == "mixed_float16":
        assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
        opt = opt.inner_optimizer
    assert isinstance(opt, sngm_keras.SNGM)
    assert int(opt.iterations.numpy()) == 8
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    # Normalized steps: each weight moves by at most lr * 8 / (1 - beta)... and by something.
    moved = max(np.abs(a - b).max() for a, b in zip(model.get_weights(), tiny_model().get_weights()))
    assert 1e-3 < moved <= 0.5 * 8 / (1 - 0.9)


BACKEND_SCRIPT = r"""
import json, sys, numpy as np, keras, sngm_keras
from sngm_keras.schedules import PolynomialWarmup
rng = np.random.default_rng(0)
w0 = [rng.normal(size=s).astype("float32") for s in [(3, 4), (4,), (2, 2, 3)]]
vs = [keras.Variable(w) for w in w0]
opt = sngm_keras.SNGM(PolynomialWarmup(0.2, 30, power=1.1), momentum=0.9, weight_decay=1e-2)
for t in range(20):
    g = [(1.0 + i) * v.numpy() + np.cos(t + i) for i, v in enumerate(vs)]
    opt.apply([keras.ops.convert_to_tensor(x.astype("float32")) for x in g], vs)
print(json.dumps({"backend": keras.backend.backend(), "w": [v.numpy().tolist() for v in vs]}))
"""


def test_tensorflow_and_jax_backends_agree():
    results = {}
    for backend in ("tensorflow", "jax"):
        env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
        out = subprocess.run(
            [sys.executable, "-c", BACKEND_SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["backend"] == backend
        results[backend] = [np.array(w) for w in result["w"]]
    assert_close(results["jax"], results["tensorflow"], rtol=1e-5, atol=1e-6)
    assert np.abs(results["jax"][0] - initial_weights()[0]).max() > 1e-2


DECOUPLED_JAX_SCRIPT = r"""
import json, sys, numpy as np, jax, keras, sngm_keras
assert keras.backend.backend() == "jax"
given = json.loads(sys.argv[1])
w0 = [np.asarray(w, "float32") for w in given["w0"]]
good = [np.asarray(g, "float32") for g in given["good"]]
bad = [np.asarray(g, "float32") for g in given["bad"]]
out = {}
for name in ("SNGM", "MSGD"):
    for mode in ("eager", "jit"):
        opt = getattr(sngm_keras, name)(0.1, weight_decay=0.1, decoupled_weight_decay=True)
        vs = [keras.Variable(w) for w in w0]
        opt.build(vs)
        if mode == "eager":
            step = lambda grads: opt.apply([jax.numpy.asarray(g) for g in grads], vs)
        else:  # as Keras' jitted train step applies it
            jitted = jax.jit(opt.stateless_apply)
            def step(grads):
                new_vs, new_opt = jitted([v.value for v in opt.variables], grads, [v.value for v in vs])
                for v, x in zip(vs, new_vs):
                    v.assign(x)
                for v, x in zip(opt.variables, new_opt):
                    v.assign(x)
        states = []
        for grads in (good, bad, good):
            step(grads)
            states.append({
                "w": [np.asarray(v.value).tolist() for v in vs],
                "u": [np.asarray(m.value).tolist() for m in opt.momentums],
                "skipped": int(opt.skipped_steps.value),
            })
        out[name + "_" + mode] = states
print(json.dumps(out))
"""


def test_a_skipped_step_does_not_decay_the_weights_either_on_jax():
    """The same on JAX, where the optimizer runs in `_backend_update_step`:
    eager and in a jitted `stateless_apply`, as JAX's train step runs it."""
    good = [g.astype("float32") for g in quadratic_grad(initial_weights(), 0)]
    given = {
        "w0": [w.tolist() for w in initial_weights()],
        "good": [g.tolist() for g in good],
        "bad": [g.tolist() for g in poisoned(good, np.nan)],
    }
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", DECOUPLED_JAX_SCRIPT, json.dumps(given)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    zeros = [np.zeros(s) for s in SHAPES]
    for cls in (sngm_keras.SNGM, sngm_keras.MSGD):
        for mode in ("eager", "jit"):
            first, skipped, third = results[f"{cls.__name__}_{mode}"]
            w_ref, _ = decoupled_reference_step(cls, initial_weights(), zeros, good, 0.1, 0.1)
            assert_close([np.array(w) for w in first["w"]], w_ref, rtol=1e-6, atol=1e-7)
            assert skipped["w"] == first["w"] and skipped["u"] == first["u"], (cls.__name__, mode)  # bit for bit
            assert (first["skipped"], skipped["skipped"], third["skipped"]) == (0, 1, 1)
            w_ref, u_ref = decoupled_reference_step(
                cls, [np.array(w) for w in first["w"]], [np.array(u) for u in first["u"]], good, 0.1, 0.1
            )
            assert_close([np.array(w) for w in third["w"]], w_ref, rtol=1e-6, atol=1e-7)
            assert_close([np.array(u) for u in third["u"]], u_ref, rtol=1e-6, atol=1e-7)
