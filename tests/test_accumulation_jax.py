"""MicroBatchModel on the JAX backend.

The test process runs TensorFlow (conftest), so the JAX runs happen once, in a
subprocess with KERAS_BACKEND=jax and two host CPU devices: this module run as

    python -m tests.test_accumulation_jax INIT.npz OUT.json

trains every JAX case from the initial weights in INIT.npz and writes the
results as JSON; the tests below read them (and train the TensorFlow side of
the TF/JAX comparison in the test process itself).
"""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, data, max_diff

SHAPES = [(8, 16), (16,), (16, 3), (3,)]
BATCH, MICRO, EPOCHS = 64, 8, 2


def initial_weights():
    rng = np.random.default_rng(1)
    return [rng.normal(scale=0.5, size=s).astype("float32") for s in SHAPES]


def dp_micro_batch_order(n, batch=BATCH, micro=MICRO):
    """Rows in the order that makes one device's micro-batches of 2 x micro
    the micro-batches of two devices with `micro` (see _accumulation_jax)."""
    half = batch // 2
    return np.concatenate(
        [
            np.r_[
                start + micro * i : start + micro * (i + 1), start + half + micro * i : start + half + micro * (i + 1)
            ]
            for start in range(0, n, batch)
            for i in range(half // micro)
        ]
    )


def bn_recurrence(x, micro_batches):
    """BatchNorm(momentum=0.9)'s moving mean after seeing each row set in turn."""
    expected = np.zeros(x.shape[1])
    for rows in micro_batches:
        expected = 0.9 * expected + 0.1 * x[rows].mean(axis=0)
    return expected


# ---------------------------------------------------------------- JAX worker


def _worker(init_path, out_path):
    import jax
    import keras
    from jax.sharding import NamedSharding, PartitionSpec

    import sngm_keras
    from sngm_keras import _accumulation_jax
    from sngm_keras.accumulation import MicroBatchModel
    from sngm_keras.batch_split import num_replicas
    from sngm_keras.noise_scale import NOISE_SCALE_KEYS
    from sngm_keras.schedules import PolynomialWarmup

    assert keras.backend.backend() == "jax"
    saved = np.load(init_path)
    init = [saved[f"arr_{i}"] for i in range(len(SHAPES))]
    x, y = data()

    def dense(batchnorm=False):
        keras.utils.set_random_seed(0)
        layers = [keras.Input((8,))]
        if batchnorm:
            layers.append(keras.layers.BatchNormalization(momentum=0.9))
        layers += [keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(3)]
        model = keras.Sequential(layers)
        if not batchnorm:
            model.set_weights(init)
        return model

    def sngm():
        return sngm_keras.SNGM(PolynomialWarmup(0.5, 10, power=1.1), weight_decay=1e-3)

    def train(model, optimizer=None, jit=True, n=256, epochs=EPOCHS, order=None):
        model.compile(
            optimizer=optimizer or sngm(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=jit,
        )
        rows = np.arange(n) if order is None else order
        history = model.fit(x[rows], y[rows], batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0).history
        return {
            "weights": [w.tolist() for w in model.get_weights()],
            "iterations": int(model.optimizer.iterations.numpy()),
            "loss": history["loss"],
            "accuracy": history["accuracy"],
            "noise_scale": [float(history[k][-1]) for k in NOISE_SCALE_KEYS if k in history],
        }

    def moving_mean(model):
        return np.asarray(model.model.layers[0].moving_mean.numpy()).tolist()

    out = {"devices": len(jax.devices()), "replicas_without_distribution": num_replicas(None)}
    out["plain"] = train(dense())
    out["micro"] = train(MicroBatchModel(dense(), MICRO))
    out["micro_not_jitted"] = train(MicroBatchModel(dense(), MICRO), jit=False)
    # The gradient noise scale: off changes nothing; one micro-batch of the
    # whole batch cannot measure it (one warning, below).
    warnings = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("sngm_keras").addHandler(handler)
    out["micro_no_noise"] = train(MicroBatchModel(dense(), MICRO, noise_scale=False))
    out["one_micro_batch"] = train(MicroBatchModel(dense(), BATCH))
    out["micro16_in_dp_order"] = train(MicroBatchModel(dense(), 2 * MICRO), order=dp_micro_batch_order(256))
    # Loss scaling: LossScaleOptimizer scales the loss, the accumulated
    # gradient is unscaled once by its stateless_apply.
    lso = lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1, momentum=0.9))
    out["lso_plain"] = train(dense(), lso())
    out["lso_micro"] = train(MicroBatchModel(dense(), MICRO), lso())
    bn = MicroBatchModel(dense(batchnorm=True), MICRO)
    train(bn, n=BATCH, epochs=1)
    out["bn_moving_mean"] = moving_mean(bn)

    if len(jax.devices()) >= 2:
        distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices()[:2])
        with distribution.scope():
            out["dp_replicas"] = num_replicas(None)
            model = MicroBatchModel(dense(), MICRO)
            out["dp_micro"] = train(model)
            # The compiled step: the split and merge move no rows between
            # devices; only the reductions (gradient, loss, metrics) cross.
            mesh = distribution.device_mesh.backend_mesh
            sharded = NamedSharding(mesh, PartitionSpec(distribution.batch_dim_name))
            batch = (jax.device_put(x[:BATCH], sharded), jax.device_put(y[:BATCH], sharded))
            state = model._get_jax_state(True, True, True, True)
            step = jax.jit(lambda state, batch: _accumulation_jax.train_step(model, state, batch))
            hlo = step.lower(state, batch).compile().as_text()
            ops = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
            out["dp_collectives"] = {op: hlo.count(f" {op}(") + hlo.count(f" {op}-start(") for op in ops}
            bn = MicroBatchModel(dense(batchnorm=True), MICRO)
            train(bn, n=BATCH, epochs=1)
            out["dp_bn_moving_mean"] = moving_mean(bn)
            out["dp_one_micro_batch"] = train(MicroBatchModel(dense(), BATCH // 2))
            bad = MicroBatchModel(dense(), 16)
            bad.compile(optimizer=sngm(), loss="mse")
            try:
                bad.fit(x[:96], y[:96], batch_size=48, verbose=0)
                out["dp_bad_split"] = None
            except ValueError as e:
                out["dp_bad_split"] = str(e)

    out["noise_warnings"] = warnings
    with open(out_path, "w") as f:
        json.dump(out, f)


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def init_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("jax") / "init.npz"
    np.savez(path, *initial_weights())
    return path


@pytest.fixture(scope="module")
def jax_results(init_path):
    out = init_path.parent / "out.json"
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip(),
    )
    process = subprocess.run(
        [sys.executable, "-m", "tests.test_accumulation_jax", str(init_path), str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stdout[-4000:]
    with open(out) as f:
        return json.load(f)


def test_eight_micro_batches_equal_one_batch(jax_results):
    plain, micro = jax_results["plain"], jax_results["micro"]
    assert max_diff(micro["weights"], plain["weights"]) < 1e-5
    assert max_diff(plain["weights"], initial_weights()) > 1e-2
    # One update per batch of 64, not per micro-batch: 2 epochs x 4 batches.
    assert plain["iterations"] == micro["iterations"] == 8
    np.testing.assert_allclose(micro["loss"], plain["loss"], rtol=1e-5)
    np.testing.assert_allclose(micro["accuracy"], plain["accuracy"], rtol=1e-6)
    assert jax_results["replicas_without_distribution"] == 1


def test_step_without_jit_agrees(jax_results):
    eager, micro = jax_results["micro_not_jitted"], jax_results["micro"]
    assert max_diff(eager["weights"], micro["weights"]) < 1e-5
    assert eager["iterations"] == 8


def test_loss_scale_optimizer(jax_results):
    plain, micro = jax_results["lso_plain"], jax_results["lso_micro"]
    assert max_diff(micro["weights"], plain["weights"]) < 1e-5
    assert max_diff(plain["weights"], initial_weights()) > 1e-2
    np.testing.assert_allclose(micro["loss"], plain["loss"], rtol=1e-5)


def test_batchnorm_statistics_follow_each_micro_batch(jax_results):
    x, _ = data(BATCH)
    mean = np.asarray(jax_results["bn_moving_mean"])
    np.testing.assert_allclose(
        mean, bn_recurrence(x, [slice(8 * i, 8 * i + 8) for i in range(8)]), rtol=1e-5, atol=1e-6
    )
    assert np.abs(mean - 0.1 * x.mean(axis=0)).max() > 0.1


def test_tensorflow_and_jax_agree(jax_results):
    import keras

    import sngm_keras
    from sngm_keras.accumulation import MicroBatchModel
    from sngm_keras.schedules import PolynomialWarmup

    assert keras.backend.backend() == "tensorflow"
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(3)])
    inner.set_weights(initial_weights())
    model = MicroBatchModel(inner, MICRO)
    model.compile(
        optimizer=sngm_keras.SNGM(PolynomialWarmup(0.5, 10, power=1.1), weight_decay=1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = data()
    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0).history
    jax_micro = jax_results["micro"]
    assert max_diff(model.get_weights(), jax_micro["weights"]) < 1e-5
    assert int(model.optimizer.iterations.numpy()) == jax_micro["iterations"] == 8
    np.testing.assert_allclose(history["loss"], jax_micro["loss"], rtol=1e-5)
    # The same micro-batches (one device): the same noise-scale estimates.
    assert len(jax_micro["noise_scale"]) == 3
    np.testing.assert_allclose(
        [history[k][-1] for k in ("gradient_noise_scale", "gradient_sq_norm_ema", "gradient_variance_ema")],
        jax_micro["noise_scale"],
        rtol=1e-4,
    )


def needs_two_devices(results):
    if results["devices"] < 2:
        pytest.skip("JAX did not create two host devices")


def test_data_parallel_two_devices_equal_one(jax_results):
    needs_two_devices(jax_results)
    assert jax_results["dp_replicas"] == 2
    dp, one = jax_results["dp_micro"], jax_results["micro"]
    assert dp["iterations"] == 8
    assert max_diff(dp["weights"], one["weights"]) < 1e-5
    np.testing.assert_allclose(dp["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(dp["accuracy"], one["accuracy"], rtol=1e-6)


def test_data_parallel_micro_batch_takes_rows_from_every_shard(jax_results):
    needs_two_devices(jax_results)
    # Device 0 holds rows 0..31, device 1 rows 32..63; micro-batch i is rows
    # 8i..8i+7 of each, and BatchNorm's mean runs over all 16 of them.
    x, _ = data(BATCH)
    micro = [np.r_[8 * i : 8 * i + 8, 32 + 8 * i : 32 + 8 * i + 8] for i in range(4)]
    np.testing.assert_allclose(jax_results["dp_bn_moving_mean"], bn_recurrence(x, micro), rtol=1e-5, atol=1e-6)
    collectives = jax_results["dp_collectives"]
    assert collectives["all-reduce"] > 0, collectives
    assert all(count == 0 for op, count in collectives.items() if op != "all-reduce"), collectives


def test_data_parallel_batch_must_split_on_every_device(jax_results):
    needs_two_devices(jax_results)
    assert "x 2 replica" in jax_results["dp_bad_split"]


def test_noise_scale_off_changes_nothing_and_one_micro_batch_warns(jax_results):
    on, off = jax_results["micro"], jax_results["micro_no_noise"]
    assert len(on["noise_scale"]) == 3 and on["noise_scale"][0] > 0 and off["noise_scale"] == []
    assert max_diff(on["weights"], off["weights"]) == 0 and on["loss"] == off["loss"]
    one = jax_results["one_micro_batch"]
    assert one["noise_scale"] == [] and np.all(np.isfinite(one["loss"]))
    assert max_diff(one["weights"], jax_results["plain"]["weights"]) < 1e-5
    expected = 2 if jax_results["devices"] >= 2 else 1  # 1 device, then 2 devices with 1 micro-batch
    assert len(jax_results["noise_warnings"]) == expected, jax_results["noise_warnings"]
    assert all("single small batch" in w for w in jax_results["noise_warnings"])


def test_data_parallel_noise_scale_equals_one_device_on_the_same_micro_batches(jax_results):
    """Two devices with micro-batches of 8 take each micro-batch's gradient
    over 16 rows (8 from each device): one device with micro-batches of 16
    holding those rows measures the same, to float32 rounding."""
    needs_two_devices(jax_results)
    dp, one = jax_results["dp_micro"], jax_results["micro16_in_dp_order"]
    assert len(dp["noise_scale"]) == 3 and dp["noise_scale"][0] > 0
    np.testing.assert_allclose(dp["noise_scale"], one["noise_scale"], rtol=1e-4)
    assert max_diff(dp["weights"], one["weights"]) < 1e-5
    assert jax_results["dp_one_micro_batch"]["noise_scale"] == []


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
