"""The gradient noise scale measured by MicroBatchModel (TensorFlow backend;
the JAX side is in test_accumulation_jax.py)."""

import logging

import keras
import numpy as np
import pytest

import sngm_keras
from sngm_keras.accumulation import MicroBatchModel
from sngm_keras.noise_scale import (
    DEFAULT_DECAY,
    NOISE_SCALE_KEYS,
    change_over_window,
    ema_window,
    estimate,
    steps_and_examples,
    suggested_batch,
    trend,
    updates_to_settle,
)
from tests.helpers import data, dense_model, finish, free_port, load, max_diff, run_worker, sngm

# Least squares y = x.w* + e, x ~ N(0, I_d), e ~ N(0, s2), loss (x.w - y)^2,
# at fixed w = w* + delta. The per-example gradient is 2 (x.w - y) x, so
#   G = 2 delta,  |G|^2 = 4 |delta|^2,
#   E|g_i|^2 = 4 ((d + 2) |delta|^2 + d s2)   (Gaussian fourth moments),
#   tr(Sigma) = E|g_i|^2 - |G|^2 = 4 ((d + 1) |delta|^2 + d s2),
# B_simple = tr(Sigma) / |G|^2 = 33 for d = 16, |delta|^2 = 1, s2 = 1.
D, NOISE_VAR = 16, 1.0
DELTA = np.full(D, 0.25)
EXACT_SQ_NORM = 4 * DELTA @ DELTA
EXACT_TRACE = 4 * ((D + 1) * DELTA @ DELTA + D * NOISE_VAR)


class Zero(keras.optimizers.schedules.LearningRateSchedule):
    def __call__(self, step):
        return 0.0


def least_squares(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype("float32")
    y = (x @ np.zeros(D) + rng.normal(scale=np.sqrt(NOISE_VAR), size=n)).astype("float32")
    return x, y[:, None]


def frozen_linear(micro, optimizer, decay=0.9999):
    """w* = 0 and w = delta; learning rate 0, so w stays at delta."""
    net = keras.Sequential([keras.Input((D,)), keras.layers.Dense(1, use_bias=False)])
    net.set_weights([DELTA[:, None].astype("float32")])
    model = MicroBatchModel(net, micro, noise_scale_decay=decay)
    model.compile(optimizer=optimizer, loss="mse")
    return model


def measure(model, batch, steps, seed=0):
    x, y = least_squares(batch * steps, seed)
    history = model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0).history
    return {k: history[k][-1] for k in NOISE_SCALE_KEYS}


def test_estimator_is_unbiased_in_closed_form():
    # E|g_n|^2 = |G|^2 + tr / n, exactly.
    sq, tr = 3.0, 120.0
    got = estimate(sq + tr / 8, sq + tr / 64, 8, 64)
    np.testing.assert_allclose(got, (sq, tr), rtol=1e-12)
    with pytest.raises(ValueError):
        estimate(1.0, 1.0, 64, 64)
    assert steps_and_examples(1000.0, 4000) == pytest.approx((1.25, 5.0))
    assert steps_and_examples(float("inf"), 4000) is None and steps_and_examples(None, 4000) is None


# The per-step estimates' spread, from a NumPy simulation of the same
# problem: relative standard deviation of the 800-step (400 for B = 256) mean
# at most 1.6% for |G|^2, 1.2% for tr(Sigma), 1.6% for B_simple; 5% is over
# three of them.
@pytest.mark.parametrize("micro,batch,steps", [(4, 64, 800), (16, 64, 800), (8, 256, 400)])
def test_closed_form_least_squares(micro, batch, steps):
    # The weight decay (coupled L2 in MSGD) must not enter the measure.
    got = measure(frozen_linear(micro, sngm_keras.MSGD(Zero(), weight_decay=0.5)), batch, steps)
    assert got["gradient_sq_norm_ema"] == pytest.approx(EXACT_SQ_NORM, rel=0.05)
    assert got["gradient_variance_ema"] == pytest.approx(EXACT_TRACE, rel=0.05)
    assert got["gradient_noise_scale"] == pytest.approx(EXACT_TRACE / EXACT_SQ_NORM, rel=0.05)


def test_any_keras_optimizer_and_loss_scaling_measure_the_same():
    """One replica: with a plain Keras optimizer the step's gradient is read
    in the train step, with sngm_keras's inside the optimizer; a
    LossScaleOptimizer's scaled gradients are measured in the loss's units."""
    runs = {
        "msgd": sngm_keras.MSGD(Zero()),
        "keras_sgd": keras.optimizers.SGD(0.0),
        "loss_scaled": keras.optimizers.LossScaleOptimizer(sngm_keras.MSGD(Zero()), initial_scale=2.0**10),
    }
    got = {name: measure(frozen_linear(8, optimizer), 64, 40) for name, optimizer in runs.items()}
    for name in ("keras_sgd", "loss_scaled"):
        np.testing.assert_allclose(
            [got[name][k] for k in NOISE_SCALE_KEYS], [got["msgd"][k] for k in NOISE_SCALE_KEYS], rtol=1e-4
        )


def fit_dense(noise_scale, micro=8, steps=3, jit=False):
    model = MicroBatchModel(dense_model(), micro, noise_scale=noise_scale, jit_compile=jit)
    model.compile(optimizer=sngm(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data(64 * steps)
    history = model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0).history
    return model, history


@pytest.mark.parametrize("jit", [False, True], ids=["eager-loop", "xla-loop"])
def test_measuring_does_not_change_training(jit):
    on, h_on = fit_dense(True, jit=jit)
    off, h_off = fit_dense(False, jit=jit)
    assert all(k in h_on for k in NOISE_SCALE_KEYS) and not any(k in h_off for k in NOISE_SCALE_KEYS)
    assert np.isfinite(h_on["gradient_noise_scale"][-1]) and h_on["gradient_noise_scale"][-1] > 0
    assert max_diff(on.get_weights(), off.get_weights()) == 0
    assert max_diff(on.get_weights(), dense_model().get_weights()) > 1e-2
    assert h_on["loss"] == h_off["loss"]


def test_one_micro_batch_warns_once_and_trains_as_without(caplog):
    with caplog.at_level(logging.WARNING, logger="sngm_keras"):
        model, history = fit_dense(True, micro=64)
        model.evaluate(*data(64), batch_size=64, verbose=0)
    warnings = [r for r in caplog.records if "noise scale" in r.getMessage()]
    assert len(warnings) == 1 and "single" in warnings[0].getMessage()
    assert not any(k in history for k in NOISE_SCALE_KEYS)
    assert all(np.isfinite(history["loss"]))
    off, _ = fit_dense(False, micro=64)
    assert max_diff(model.get_weights(), off.get_weights()) == 0


def test_not_a_validation_metric_and_kept_across_epochs():
    model = MicroBatchModel(dense_model(), 8)
    model.compile(optimizer=sngm(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data(128)
    history = model.fit(x, y, batch_size=64, epochs=2, validation_data=(x, y), shuffle=False, verbose=0).history
    assert "val_gradient_noise_scale" not in history and "val_loss" in history
    # fit resets metrics every epoch; the averages keep all steps (4 here).
    debias = float(model.noise_scale_tracker.debias.numpy())
    assert debias == pytest.approx(1 - 0.99**4, rel=1e-5)


def load_noise(path):
    return np.load(path)["noise_scale"]


def test_two_replicas_and_two_workers_measure_what_one_device_does(tmp_path):
    """MirroredStrategy over two logical CPUs and MultiWorkerMirroredStrategy
    over two processes, micro-batches of 8 in batches of 64: each replica's
    micro-batches are the one-device run's (its shard is a contiguous half of
    the batch), so the estimates agree to float32 rounding, not just within
    sampling error; the step's gradient is read after the optimizer's
    all-reduce and the micro-batch sums are all-reduced as one scalar."""
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    processes = [run_worker("one", tmp_path / "one.npz"), run_worker("two", tmp_path / "two.npz")]
    for index in range(2):
        tf_config = (
            f'{{"cluster": {{"worker": ["{workers[0]}", "{workers[1]}"]}}, '
            f'"task": {{"type": "worker", "index": {index}}}}}'
        )
        processes.append(run_worker("worker", tmp_path / f"w{index}.npz", env={"TF_CONFIG": tf_config}))
    for p in processes:
        finish(p)
    one = load_noise(tmp_path / "one.npz")
    assert len(one) == 3 and np.all(np.isfinite(one)) and one[0] > 0
    assert load(tmp_path / "one.npz")[2] == 1
    for name in ("two", "w0", "w1"):
        assert load(tmp_path / f"{name}.npz")[2] == 2, name  # the replicas the strategy really had
        np.testing.assert_allclose(load_noise(tmp_path / f"{name}.npz"), one, rtol=1e-4)


def test_two_replicas_with_a_keras_optimizer_warn_instead(tmp_path, capfd):
    process = run_worker("two", tmp_path / "two.npz", optimizer="sgd")
    out, _ = process.communicate(timeout=240)
    assert process.returncode == 0, out[-3000:]
    assert load(tmp_path / "two.npz")[2] == 2
    assert len(load_noise(tmp_path / "two.npz")) == 0
    assert out.count("gradient noise scale not measured") == 1 and "sngm_keras optimizers" in out


def closed_form_noise_scale(sq_delta):
    """B_simple of the least-squares problem at |delta|^2 = sq_delta (see the top): (d + 1) + d s2 / |delta|^2."""
    return ((D + 1) * sq_delta + D * NOISE_VAR) / sq_delta


def test_settling_suggested_batch_and_trend_in_closed_form():
    assert (ema_window(), updates_to_settle()) == (100, 200)
    assert (ema_window(0.9), updates_to_settle(0.9)) == (10, 20)
    # |delta|^2 = 1, 1/4, 1/16: B_simple = 33, 81, 273.
    assert [suggested_batch(closed_form_noise_scale(1 / 4**k)) for k in range(3)] == [32, 64, 256]
    assert suggested_batch(0.3) == 1
    level = [(50 * e, closed_form_noise_scale(1.0)) for e in range(1, 5)]
    assert change_over_window(level) == (1.0, 100)
    # |delta|^2 halving every 50 updates: B_simple = 33, 49, 81, 145; at 200
    # updates the comparison is with the epoch at 100 (49), a window before.
    rising = [(50 * (e + 1), closed_form_noise_scale(1 / 2**e)) for e in range(4)]
    assert [b for _, b in rising] == [33, 49, 81, 145]
    assert change_over_window(rising) == (145 / 49, 100)
    assert change_over_window(rising[:2]) is None  # no epoch a window before the last
    assert change_over_window([(100, 33.0), (200, float("inf"))]) is None
    assert [trend(r) for r in (145 / 49, 1.2, 1.19)] == ["rising", "rising", "level"]
    assert [trend(r) for r in (1.0, 1 / 1.19, 1 / 1.2, 49 / 145)] == ["level", "level", "falling", "falling"]


def ema_mixture(sq_deltas, window):
    """The bias-corrected EMAs' B_simple after `window` steps at each of
    `sq_deltas` in turn, from the closed-form |G|^2 and tr(Sigma)."""
    steps = [s for s in sq_deltas for _ in range(window)]
    weights = [DEFAULT_DECAY ** (len(steps) - 1 - i) for i in range(len(steps))]
    sq_norm = sum(w * 4 * s for w, s in zip(weights, steps))
    trace = sum(w * 4 * ((D + 1) * s + D * NOISE_VAR) for w, s in zip(weights, steps))
    return trace / sq_norm


class EveryWindow(keras.callbacks.Callback):
    """B_simple after every `window` updates, the weights then scaled by `scale`."""

    def __init__(self, window, scale):
        super().__init__()
        self.window, self.scale, self.epochs = window, scale, []

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.window == 0:
            self.epochs.append((batch + 1, float(logs["gradient_noise_scale"])))
            self.model.model.set_weights([w * self.scale for w in self.model.model.get_weights()])


@pytest.mark.parametrize("scale,expected_trend,batch", [(1.0, "level", 32), (0.5, "rising", 128)])
def test_measured_trend_and_batch_of_a_steady_and_a_rising_noise_scale(scale, expected_trend, batch):
    """Three windows of 100 updates at the app's decay, micro-batches of 16
    in batches of 64 (the widest scatter of the closed-form cases): |delta|^2
    fixed at 1 (B_simple 33 throughout) or quartered after each window."""
    window = ema_window()
    record = EveryWindow(window, scale)
    model = frozen_linear(16, sngm_keras.MSGD(Zero()), decay=DEFAULT_DECAY)
    x, y = least_squares(64 * 3 * window)
    model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    sq_deltas = [1.0 / 4**k for k in range(3)] if scale != 1.0 else [1.0] * 3
    expected = [ema_mixture(sq_deltas[: k + 1], window) for k in range(3)]
    assert [round(b) for b in expected] == ([33, 33, 33] if scale == 1.0 else [33, 52, 100])
    np.testing.assert_allclose([b for _, b in record.epochs], expected, rtol=0.08)
    ratio, updates = change_over_window(record.epochs)
    assert updates == window and trend(ratio) == expected_trend
    assert suggested_batch(record.epochs[-1][1]) == batch
