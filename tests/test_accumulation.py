"""MicroBatchModel: the accumulated, all-reduced gradient is the whole batch's."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import sngm_keras
from sngm_keras.accumulation import MicroBatchModel
from sngm_keras.checks import check_batch_split
from tests.helpers import data, dense_model, finish, free_port, load, max_diff, run_worker, sngm


def train(model, optimizer, batch_size, epochs=1, jit=False):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit,
    )
    x, y = data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)
    history = model.fit(ds, epochs=epochs, verbose=0)
    return model, history.history


@pytest.mark.parametrize(
    "make_optimizer",
    [sngm, lambda: sngm_keras.LARS(1.0, trust_coefficient=0.02), lambda: keras.optimizers.SGD(0.1, momentum=0.9)],
    ids=["sngm", "lars", "keras-sgd"],
)
def test_eight_micro_batches_equal_one_batch(make_optimizer):
    plain, h_plain = train(dense_model(), make_optimizer(), batch_size=64, epochs=2)
    micro, h_micro = train(
        MicroBatchModel(dense_model(), micro_batch_size=8), make_optimizer(), batch_size=64, epochs=2
    )
    assert max_diff(micro.get_weights(), plain.get_weights()) < 1e-5
    assert max_diff(plain.get_weights(), dense_model().get_weights()) > 1e-2
    # One update per batch of 64, not per micro-batch: 2 epochs x 4 batches.
    assert int(micro.optimizer.iterations.numpy()) == 8
    np.testing.assert_allclose(h_micro["loss"], h_plain["loss"], rtol=1e-5)
    np.testing.assert_allclose(h_micro["accuracy"], h_plain["accuracy"], rtol=1e-6)


def test_micro_loop_compiled_with_xla_agrees():
    eager, _ = train(MicroBatchModel(dense_model(), 8), sngm(), 64)
    xla, _ = train(MicroBatchModel(dense_model(), 8, jit_compile=True), sngm(), 64)
    whole, _ = train(MicroBatchModel(dense_model(), 8), sngm(), 64, jit=True)
    assert max_diff(eager.get_weights(), xla.get_weights()) < 1e-5
    assert max_diff(eager.get_weights(), whole.get_weights()) < 1e-5


def test_schedule_advances_once_per_update():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([3], [0.5, 0.05])
    model, _ = train(MicroBatchModel(dense_model(), 16), sngm_keras.SNGM(schedule), 64)
    assert int(model.optimizer.iterations.numpy()) == 4
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.05)
    model, _ = train(MicroBatchModel(dense_model(), 16), sngm_keras.SNGM(schedule), 128)
    assert int(model.optimizer.iterations.numpy()) == 2
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.5)


def test_batchnorm_statistics_follow_each_micro_batch():
    model = MicroBatchModel(dense_model(batchnorm=True), micro_batch_size=8)
    model.compile(optimizer=sngm(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data(64)
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(64, drop_remainder=True), epochs=1, verbose=0)
    # BN is the first layer: its moving mean saw the 8 micro-batch means in turn.
    expected = np.zeros(8)
    for i in range(8):
        expected = 0.9 * expected + 0.1 * x[8 * i : 8 * (i + 1)].mean(axis=0)
    bn = model.model.layers[0]
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected, rtol=1e-5, atol=1e-6)
    # ... and not the single batch mean a plain step would have used.
    assert np.abs(bn.moving_mean.numpy() - 0.1 * x.mean(axis=0)).max() > 0.1


def test_batchnorm_runs_and_differs_only_through_statistics():
    plain, _ = train(dense_model(batchnorm=True), sngm(), 64)
    micro, _ = train(MicroBatchModel(dense_model(batchnorm=True), 8), sngm(), 64)
    diff = max_diff(micro.get_weights(), plain.get_weights())
    assert all(np.all(np.isfinite(w)) for w in micro.get_weights())
    assert 1e-4 < diff < 1.0
    # With batch-sized micro-batches the two are the same computation.
    same, _ = train(MicroBatchModel(dense_model(batchnorm=True), 64), sngm(), 64)
    assert max_diff(same.get_weights(), plain.get_weights()) < 1e-5


def test_bad_batch_splits_fail_before_training():
    model = MicroBatchModel(dense_model(), micro_batch_size=24)
    model.compile(optimizer=sngm(), loss="mse")
    x, y = data(256)
    with pytest.raises(ValueError, match="batch_size 64 is not a multiple of micro_batch_size 24"):
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(64, drop_remainder=True), verbose=0)
    with pytest.raises(ValueError, match="do not split into batches"):
        model.fit(x[:100], y[:100], batch_size=48, verbose=0)
    with pytest.raises(ValueError, match="micro_batch_size must be a positive integer"):
        MicroBatchModel(dense_model(), micro_batch_size=0)
    assert check_batch_split(4096, 128, 2) == 16
    with pytest.raises(ValueError, match="x 2 replica"):
        check_batch_split(4096, 3000, 2)
    assert int(model.optimizer.iterations.numpy()) == 0


def test_a_last_smaller_batch_of_whole_micro_batches_trains_as_its_batches_do():
    x, y = data(224)  # batches of 64: three, then one of 32 (two micro-batches of 16)
    dynamic = MicroBatchModel(dense_model(), micro_batch_size=16)
    dynamic.compile(optimizer=sngm(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = dynamic.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(64), epochs=2, verbose=0).history
    assert int(dynamic.optimizer.iterations) == 8
    noise_scale = history["gradient_noise_scale"]  # measured with B read as each step runs
    assert len(noise_scale) == 2 and all(np.isfinite(noise_scale)) and min(noise_scale) > 0

    static = MicroBatchModel(dense_model(), micro_batch_size=16)  # the same batches, one static shape each
    static.compile(optimizer=sngm(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for _ in range(2):
        for start in range(0, 224, 64):
            static.train_on_batch(x[start : start + 64], y[start : start + 64])
    assert max_diff(dynamic.get_weights(), static.get_weights()) < 1e-6
    scales = [float(m.noise_scale_tracker.result()["gradient_noise_scale"]) for m in (dynamic, static)]
    assert scales[0] == pytest.approx(scales[1], rel=1e-4)

    # A last batch that does not split stops the step that holds it, naming the split.
    bad = MicroBatchModel(dense_model(), micro_batch_size=24)
    bad.compile(optimizer=sngm(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a multiple of micro_batch_size 24"):
        bad.fit(tf.data.Dataset.from_tensor_slices(data(256)).batch(48), verbose=0)  # 5 x 48, then 16


UNEVEN_REPLICAS = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 4)
import keras, sngm_keras
strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(4)])
rng = np.random.default_rng(0)
x, y = rng.normal(size=(22, 8)).astype("float32"), rng.integers(0, 3, 22).astype("int32")
with strategy.scope():
    net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    model = sngm_keras.MicroBatchModel(net, micro_batch_size=2)
    model.compile(optimizer=sngm_keras.SNGM(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
try:  # batches of 16, then 6, which tf.distribute cuts into 2, 2, 2 and 0 rows
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), verbose=0)
except tf.errors.InvalidArgumentError as error:
    print("REFUSED:", next(line for line in error.message.splitlines() if "assertion failed" in line))
"""


def test_a_batch_that_splits_unevenly_over_replicas_is_refused():
    result = subprocess.run([sys.executable, "-c", UNEVEN_REPLICAS], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "a batch is not a multiple of micro_batch_size 2 x 4 replicas = 8 (its parts on the" in result.stdout


def test_saves_and_loads(tmp_path):
    model, _ = train(MicroBatchModel(dense_model(), 8), sngm(), 64)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, MicroBatchModel) and loaded.micro_batch_size == 8
    assert max_diff(loaded.get_weights(), model.get_weights()) == 0


@pytest.mark.parametrize("optimizer", ["sngm", "lars"])
def test_two_replicas_equal_one_replica(tmp_path, optimizer):
    finish(run_worker("one", tmp_path / "one.npz", micro=0, optimizer=optimizer))
    finish(run_worker("two", tmp_path / "two.npz", micro=8, optimizer=optimizer))
    one, it_one, r_one = load(tmp_path / "one.npz")
    two, it_two, r_two = load(tmp_path / "two.npz")
    assert (r_one, r_two) == (1, 2)
    assert it_one == it_two == 6
    assert max_diff(one, two) < 1e-5


def test_multi_worker_mirrored_strategy(tmp_path):
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers[:2]}, "task": {"type": "worker", "index": index}})
        processes.append(run_worker("worker", tmp_path / f"w{index}.npz", env={"TF_CONFIG": tf_config}))
    for p in processes:
        finish(p)
    finish(run_worker("one", tmp_path / "single.npz", micro=0))
    w0, it0, replicas = load(tmp_path / "w0.npz")
    w1, it1, _ = load(tmp_path / "w1.npz")
    single, _, _ = load(tmp_path / "single.npz")
    assert replicas == 2 and it0 == it1 == 6
    assert max_diff(w0, w1) == 0
    assert max_diff(w0, single) < 1e-5
