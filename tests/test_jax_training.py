"""The training app on Keras' JAX backend: in-memory input, augmentation on the device.

The test process runs TensorFlow (conftest); the JAX runs are subprocesses
with KERAS_BACKEND=jax on the CPU, one of them with TensorFlow made
unimportable (a `sys.meta_path` finder refusing tensorflow*, then the app
run with runpy). The one-step comparison trains the TensorFlow side here and
the JAX side in a subprocess (`_one_step`), from the same initial weights
and the same batch.
"""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--model=twoconv", "--verbose=0"]
NOISE = ("I0000", "WARNING: All log messages", "cpu_feature_guard", "To enable the following", "cuInit")

# Makes TensorFlow (and TFDS, TensorBoard) unimportable, then runs the app:
# the machines with JAX and no TensorFlow.
WITHOUT_TENSORFLOW = """
import runpy, sys
BLOCKED = ("tensorflow", "tensorflow_datasets", "tensorboard", "tf_keras")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
sys.meta_path.insert(0, Block())
sys.argv = ["apps.train", *sys.argv[1:]]
try:
    runpy.run_module("apps.train", run_name="__main__", alter_sys=True)
finally:
    print("TENSORFLOW MODULES:", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED), file=sys.stderr)
"""


def jax_env(**extra):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env.pop("XLA_FLAGS", None)
    return env


def run_jax(*args, without_tensorflow=False, timeout=300):
    head = ["-c", WITHOUT_TENSORFLOW] if without_tensorflow else ["-m", "apps.train"]
    result = subprocess.run(
        [sys.executable, *head, *args], cwd=ROOT, env=jax_env(), capture_output=True, text=True, timeout=timeout
    )
    result.stderr = "\n".join(line for line in result.stderr.splitlines() if not line.startswith(NOISE))
    return result


def history(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def summary(model_dir):
    with open(os.path.join(model_dir, "summary.json")) as f:
        return json.load(f)


def final_weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "final.keras")).get_weights()


def image_folder(root, train_per_class, test_per_class, classes=4, size=16, seed=0):
    """DIR/{train,test}/<class>/<n>.png of random images (PNG: lossless)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                base = rng.integers(0, 256, size=(1, 1, 3)) * (c + 1) // classes
                noise = rng.integers(-40, 41, size=(size, size, 3))
                image = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"{i:03d}.png")
    return str(root)


# ------------------------------------------------------------- in process


def test_crop_flip_normalize_is_the_pipelines_pad_crop_flip():
    from sngm_keras.augment import CropFlipNormalize, num_draws

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 8, 6, 3), dtype=np.uint8)
    pad, mean, std = 2, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    draws = np.arange(16, dtype=np.int32) * 7 % num_draws(pad)
    layer = CropFlipNormalize(mean, std, pad)
    out = np.asarray(layer({"images": images, "crop_flip": draws}, training=True))
    choices = 2 * pad + 1
    padded = np.pad(images, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    for i, d in enumerate(draws):
        flip, dx, dy = d % 2, (d // 2) % choices, (d // 2) // choices
        crop = padded[i, dy : dy + 8, dx : dx + 6]
        expected = (crop[:, ::-1] if flip else crop) / 255.0
        np.testing.assert_allclose(out[i], (expected - mean) / std, rtol=1e-5, atol=1e-5)
    # Evaluation, or no draws: normalization only.
    plain = (images / 255.0 - mean) / std
    np.testing.assert_allclose(np.asarray(layer({"images": images, "crop_flip": draws})), plain, atol=1e-5)
    np.testing.assert_allclose(np.asarray(layer(images, training=True)), plain, atol=1e-5)
    assert {(d % 2, d // 2 % choices, d // 2 // choices) for d in range(num_draws(pad))} == {
        (f, x, y) for f in range(2) for x in range(choices) for y in range(choices)
    }


def test_train_batches_depend_only_on_seed_and_epoch():
    from sngm_keras.data.pydatasets import TestBatches, TrainBatches

    x = np.arange(103 * 2 * 2 * 3, dtype=np.uint8).reshape(103, 2, 2, 3)
    y = np.arange(103, dtype=np.int32)
    make = lambda start, seed=0, pad=4: TrainBatches(
        x, y, batch_size=10, seed=seed, start_epoch=start, num_epochs=4, pad=pad
    )
    straight, resumed = make(0), make(2)
    assert len(straight) == 40 and len(resumed) == 20 and straight.steps == 10
    for i in range(20):
        a, b = straight[20 + i], resumed[i]
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0]["crop_flip"], b[0]["crop_flip"])
        np.testing.assert_array_equal(a[0]["images"], x[a[1]])
    epoch = np.concatenate([straight[i][1] for i in range(10)])
    assert len(set(epoch.tolist())) == 100  # a permutation, the remainder dropped
    next_epoch = np.concatenate([straight[i][1] for i in range(10, 20)])
    assert not np.array_equal(epoch, next_epoch)
    assert not np.array_equal(epoch, np.concatenate([make(0, seed=1)[i][1] for i in range(10)]))
    draws = np.concatenate([straight[i][0]["crop_flip"] for i in range(40)])
    assert draws.min() >= 0 and draws.max() < 162 and len(np.unique(draws)) > 100
    assert "crop_flip" not in make(0, pad=None)[0][0]
    with pytest.raises(IndexError):
        straight[40]
    test = TestBatches(x, y, 25)
    assert len(test) == 5 and len(test[4][1]) == 3
    np.testing.assert_array_equal(np.concatenate([test[i][1] for i in range(5)]), y)


# ------------------------------------------------------------- subprocesses


@pytest.mark.slow
def test_an_epochs_last_smaller_batch_on_jax(tmp_path):
    """B = 1024 as micro-batches of 128 on the 4,500 kept images: four
    batches of 1024 and one of 384 (a second trace, of that shape), the
    noise scale still reported after it."""
    model_dir = str(tmp_path / "run")
    result = run_jax(
        "--dataset=sample",
        *TINY,
        "--batch_size=1024",
        "--micro_batch_size=128",
        "--validation_size=500",
        "--epochs=1",
        f"--model_dir={model_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = summary(model_dir)
    assert info["updates"] == 5 and info["grad_per_n"] == pytest.approx(4480 / 4500)
    rows = history(model_dir)
    assert [int(r["updates"]) for r in rows] == [5]
    assert float(rows[0]["gradient_variance_ema"]) > 0
    assert "noise scale not measured" not in result.stderr


def test_sample_without_tensorflow(tmp_path):
    """The sample trains on JAX with TensorFlow unimportable; cifar10 (TFDS)
    then asks for a folder in one line."""
    model_dir = str(tmp_path / "run")
    result = run_jax(
        "--dataset=sample",
        *TINY,
        "--batch_size=500",
        "--micro_batch_size=250",
        "--epochs=1",
        "--max_updates=2",
        f"--model_dir={model_dir}",
        without_tensorflow=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TENSORFLOW MODULES: []" in result.stderr
    assert "run stopped at --max_updates" in result.stdout and "test accuracy" in result.stdout
    for name in ("config.json", "history.csv", "summary.json", "curves.png", "final.keras", "checkpoints"):
        assert os.path.exists(os.path.join(model_dir, name)), name
    assert not os.path.exists(os.path.join(model_dir, "logs"))  # TensorBoard needs TensorFlow
    info = summary(model_dir)
    assert info["backend"] == "jax" and "tensorflow" not in info and info["jax"]
    assert info["updates"] == 2 and info["micro_batch_size"] == 250 and info["replicas"] == 1
    assert info["num_train"] == 5000 and info["num_test"] == 1000
    assert 0.0 <= info["test_accuracy"] <= 1.0 and np.isfinite(info["train_loss"])
    rows = history(model_dir)
    assert [(int(r["epoch"]), int(r["updates"])) for r in rows] == [(1, 2)]
    assert float(rows[0]["gradient_norm"]) > 0 and rows[0]["test_accuracy"] != ""

    for dataset, expected in (("cifar10", "--dataset=DIR"), ("imagenet2012", "KERAS_BACKEND=tensorflow")):
        bad = run_jax(f"--dataset={dataset}", *TINY, f"--model_dir={tmp_path / dataset}", without_tensorflow=True)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-3000:]
        last = [line for line in bad.stderr.splitlines() if line.startswith("error: ")][-1]
        assert dataset in last and expected in last and "TensorFlow" in last, last


@pytest.mark.slow
def test_folder_resume_is_exact_and_tensorboard_with_tensorflow(tmp_path):
    """A folder dataset on JAX (TensorFlow importable: TensorBoard logs); a run
    stopped after epoch 1 and started again ends with the straight run's weights."""
    folder = image_folder(tmp_path / "images", train_per_class=30, test_per_class=10)
    args = [
        f"--dataset={folder}",
        *TINY,
        "--batch_size=40",
        "--micro_batch_size=20",
        "--epochs=3",
        "--eval_batch_size=40",
        "--learning_rate=0.5",
    ]
    straight = str(tmp_path / "straight")
    result = run_jax(*args, f"--model_dir={straight}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.isdir(os.path.join(straight, "logs", "train"))
    info = summary(straight)
    assert info["backend"] == "jax" and info["updates"] == 9 and info["num_train"] == 120

    resumed = str(tmp_path / "resumed")
    first = run_jax(*args, "--max_updates=3", f"--model_dir={resumed}")
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ("summary.json", "final.keras", "curves.png"):  # as if killed after epoch 1
        os.remove(os.path.join(resumed, name))
    again = run_jax(*args, f"--model_dir={resumed}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(epoch 1)" in again.stderr  # resumed, not restarted
    rows = history(resumed)
    assert [(int(r["epoch"]), int(r["updates"])) for r in rows] == [(1, 3), (2, 6), (3, 9)]
    for a, b in zip(final_weights(resumed), final_weights(straight)):
        np.testing.assert_array_equal(a, b)
    assert [r["test_accuracy"] for r in rows] == [r["test_accuracy"] for r in history(straight)]

    # The run stays on its backend.
    from sngm_keras.training import ConfigError, TrainConfig, train

    os.remove(os.path.join(resumed, "summary.json"))
    config = TrainConfig(
        dataset=folder,
        model="twoconv",
        batch_size=40,
        micro_batch_size=20,
        epochs=3,
        eval_batch_size=40,
        learning_rate=0.5,
        verbose=0,
        model_dir=resumed,
    )
    with pytest.raises(ConfigError, match="jax backend"):
        train(config)


MOCK_CIFAR_DATA_PARALLEL = """
import json, sys
import tensorflow_datasets as tfds
from sngm_keras.training import TrainConfig, train
config = TrainConfig(dataset="cifar10", model="twoconv", batch_size=16, micro_batch_size=4, epochs=1, max_updates=2,
                     eval_batch_size=16, strategy="mirrored", num_cpu_devices=2, verbose=0, model_dir=sys.argv[1])
with tfds.testing.mock_data(num_examples=64):
    train(config)
import tensorflow as tf
print(json.dumps([d.device_type for d in tf.config.get_visible_devices()]))
"""


def test_tfds_cifar_in_memory_on_two_devices(tmp_path):
    """cifar10 from TFDS (mock data) into memory, DataParallel over two CPU
    devices with micro-batches of 4 per device; TensorFlow sees no GPU."""
    model_dir = str(tmp_path / "run")
    result = subprocess.run(
        [sys.executable, "-c", MOCK_CIFAR_DATA_PARALLEL, model_dir],
        cwd=ROOT,
        env=jax_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["CPU"]
    info = summary(model_dir)
    assert info["backend"] == "jax" and info["replicas"] == 2 and len(info["devices"]) == 2
    assert info["updates"] == 2 and info["micro_batch_size"] == 4 and info["num_train"] == 64
    assert all(np.all(np.isfinite(w)) for w in final_weights(model_dir))


class SetWeights(keras.callbacks.Callback):
    """Gives the network `weights` before the first step."""

    def __init__(self, weights):
        super().__init__()
        self.weights = weights

    def on_train_begin(self, logs=None):
        self.model.model.set_weights(self.weights)


ONE_STEP = dict(
    model="twoconv",
    optimizer="sngm",
    batch_size=64,
    micro_batch_size=32,
    learning_rate=0.5,
    lr_schedule="constant",
    momentum=0.9,
    weight_decay=5e-4,
    epochs=1,
    augment=False,
    eval_batch_size=16,
    verbose=0,
)


def _one_step(folder, model_dir, init_path):
    """Trains ONE_STEP from the weights in init_path (either backend)."""
    from sngm_keras.training import TrainConfig, train

    saved = np.load(init_path)
    weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    return train(TrainConfig(dataset=folder, model_dir=model_dir, **ONE_STEP), extra_callbacks=[SetWeights(weights)])


def test_one_sngm_step_is_the_same_on_tensorflow_and_jax(tmp_path):
    """One SNGM update through each training path (the folder loaded, normalized,
    micro-batched, the step, final.keras) from the same initial weights and the
    same batch: the whole training set, so its order does not matter (no
    BatchNorm in twoconv, no augmentation)."""
    from sngm_keras.models import build_model

    folder = image_folder(tmp_path / "images", train_per_class=16, test_per_class=4)
    shapes = [w.shape for w in build_model("twoconv", 4, (16, 16, 3), seed=0).get_weights()]
    rng = np.random.default_rng(7)
    init = [rng.normal(scale=0.1, size=s).astype("float32") for s in shapes]
    init_path = str(tmp_path / "init.npz")
    np.savez(init_path, *init)

    jax_dir = str(tmp_path / "jax")
    code = f"from tests.test_jax_training import _one_step; _one_step({folder!r}, {jax_dir!r}, {init_path!r})"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=jax_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]

    assert keras.backend.backend() == "tensorflow"
    tf_dir = str(tmp_path / "tf")
    tf_summary = _one_step(folder, tf_dir, init_path)
    jax_summary = summary(jax_dir)
    assert (jax_summary["backend"], tf_summary["backend"]) == ("jax", "tensorflow")
    assert jax_summary["updates"] == tf_summary["updates"] == 1
    assert jax_summary["train_loss"] == pytest.approx(tf_summary["train_loss"], rel=1e-5)
    jax_weights, tf_weights = final_weights(jax_dir), final_weights(tf_dir)
    moved = max(float(np.abs(w - i).max()) for w, i in zip(tf_weights, init))
    assert moved > 1e-2
    for j, t, i in zip(jax_weights, tf_weights, init):
        # The updates w - w0 (up to ~5e-2) agree to float32 round-off (~3e-8 seen).
        np.testing.assert_allclose(j - i, t - i, rtol=1e-3, atol=2e-7)
    assert jax_summary["test_loss"] == pytest.approx(tf_summary["test_loss"], rel=1e-4)
