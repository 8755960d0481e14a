"""Tests of sngm_keras.data: the embedded sample, arrays and tf.data pipelines."""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sngm_keras import data
from sngm_keras.data import DataError, make_datasets, steps_per_epoch

ROOT = Path(__file__).resolve().parents[1]


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


# ---------------------------------------------------------------------------
# Embedded sample
# ---------------------------------------------------------------------------


def test_sample_file_size_counts_and_balance():
    assert data.SAMPLE_PATH.is_file()
    assert os.path.getsize(data.SAMPLE_PATH) <= 3 * 1024 * 1024
    raw = data.read_sample_file()
    assert len(raw["class_names"]) == 10
    for split, count in (("train", 5000), ("test", 1000)):
        labels = raw[f"{split}_labels"]
        assert labels.shape == (count,) and labels.dtype == np.int32
        np.testing.assert_array_equal(np.bincount(labels, minlength=10), [count // 10] * 10)
        assert len(raw[f"{split}_offsets"]) == count + 1
        jpegs = data.sample_jpegs(split, raw)
        assert all(j[:2] == b"\xff\xd8" and j[-2:] == b"\xff\xd9" for j in jpegs)  # JPEG SOI/EOI
        # Stored from the named split, labels matching the class folder.
        names = raw[f"{split}_files"]
        assert all(n.startswith(split + "/") for n in names)
        assert all(n.split("/")[1] == raw["class_names"][label] for n, label in zip(names, labels))
    assert len(set(raw["train_files"])) == 5000  # no duplicates


def test_load_arrays_sample_shapes_and_dtypes():
    arr = data.load_arrays("sample")
    assert arr.x_train.shape == (5000, 32, 32, 3) and arr.x_train.dtype == np.uint8
    assert arr.x_test.shape == (1000, 32, 32, 3) and arr.x_test.dtype == np.uint8
    assert arr.y_train.shape == (5000,) and arr.y_train.dtype == np.int32
    assert arr.y_test.shape == (1000,) and arr.y_test.dtype == np.int32
    assert arr.num_classes == 10 and len(arr.class_names) == 10
    assert arr.class_names[0] == "airplane" and arr.image_shape == (32, 32, 3)
    assert 0 < arr.x_train.mean() < 255
    arr.x_train[0] = 0  # a fresh copy each call: mutating it is harmless
    assert data.load_arrays("sample").x_train[0].any()


def test_sample_path_does_not_import_tensorflow():
    # Skip sngm_keras/__init__.py (it imports Keras, hence TensorFlow) and check
    # that the data package itself stays TensorFlow-free for the array path.
    code = textwrap.dedent(f"""
        import sys, types
        pkg = types.ModuleType("sngm_keras")
        pkg.__path__ = [{str(ROOT / "sngm_keras")!r}]
        sys.modules["sngm_keras"] = pkg
        import sngm_keras.data as d
        a = d.load_arrays("sample")
        assert a.x_train.shape == (5000, 32, 32, 3)
        bad = [m for m in ("tensorflow", "tensorflow_datasets", "keras", "jax") if m in sys.modules]
        assert not bad, bad
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


# ---------------------------------------------------------------------------
# Folder source
# ---------------------------------------------------------------------------


def _write_folder(root, classes=("b_cat", "a_dog", "c_eel"), per_split=(("train", 4), ("test", 2)), size=8):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = {}
    for split, count in per_split:
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / split / cls / f"{i:02d}.png")
                images[(split, cls, i)] = img
    return images


def test_folder_source(tmp_path):
    images = _write_folder(tmp_path)
    (tmp_path / "train" / "a_dog" / "notes.txt").write_text("not an image")
    arr = data.load_arrays(str(tmp_path))
    assert arr.class_names == ("a_dog", "b_cat", "c_eel")  # sorted by name
    assert arr.num_classes == 3 and arr.image_shape == (8, 8, 3)
    assert arr.x_train.shape == (12, 8, 8, 3) and arr.x_test.shape == (6, 8, 8, 3)
    assert arr.y_train.dtype == np.int32 and list(arr.y_train) == [0] * 4 + [1] * 4 + [2] * 4
    np.testing.assert_array_equal(arr.x_train[0], images[("train", "a_dog", 0)])  # PNG: exact
    np.testing.assert_array_equal(arr.x_test[5], images[("test", "c_eel", 1)])

    train_ds, test_ds, info = make_datasets(tmp_path, batch_size=5, num_epochs=2)
    assert (info.num_train, info.num_test, info.num_classes) == (12, 6, 3)
    assert len(_batches(train_ds)) == 2 * 2 and steps_per_epoch(info, 5) == 2
    x, y = next(iter(test_ds))
    assert x.shape == (5, 8, 8, 3) and x.dtype.name == "float32"
    # Folders are normalized with their own statistics.
    xs = np.concatenate(
        [b[0] for b in _batches(make_datasets(tmp_path, batch_size=12, num_epochs=1, augment=False)[0])]
    )
    np.testing.assert_allclose(xs.mean((0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(xs.std((0, 1, 2)), 1, atol=1e-3)


def test_reads_report_their_progress(tmp_path):
    """What is read and how far, to a reporter installed by the caller; nothing without one."""
    _write_folder(tmp_path)
    calls = []

    def reporter(what, total):
        calls.append([what, total, 0])
        return lambda count: calls[-1].__setitem__(2, calls[-1][2] + count)

    with data.progress.reported_to(reporter):
        data.load_arrays(str(tmp_path))
    assert calls == [[f"reading {tmp_path}: 12 training and 6 test images", 18, 18]]
    data.load_arrays(str(tmp_path))
    assert len(calls) == 1


def test_folder_errors(tmp_path):
    _write_folder(tmp_path / "ok")
    (tmp_path / "ok" / "test" / "zz_extra").mkdir()
    with pytest.raises(DataError, match="class folders differ.*zz_extra"):
        data.load_arrays(tmp_path / "ok")
    with pytest.raises(DataError, match="not found"):
        data.load_arrays(str(tmp_path / "missing"))
    (tmp_path / "flat" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no test/ sub-folder"):
        data.load_arrays(tmp_path / "flat")


# ---------------------------------------------------------------------------
# tf.data pipelines on the sample
# ---------------------------------------------------------------------------


def test_pipeline_shapes_and_batch_counts():
    train_ds, test_ds, info = make_datasets("sample", batch_size=128, num_epochs=2, eval_batch_size=300)
    assert info == data.DatasetInfo("sample", 10, (32, 32, 3), 5000, 1000, info.class_names)
    assert steps_per_epoch(info, 128) == 39
    batches = _batches(train_ds)
    assert len(batches) == 2 * 39 == len(train_ds)
    for x, y in batches:
        assert x.shape == (128, 32, 32, 3) and x.dtype == np.float32
        assert y.shape == (128,) and y.dtype == np.int32
    # Each epoch: 39 * 128 distinct examples (a permutation, remainder dropped).
    labels = np.concatenate([y for _, y in batches[:39]])
    assert np.bincount(labels, minlength=10).min() > 400
    test = _batches(test_ds)
    assert [len(y) for _, y in test] == [300, 300, 300, 100]
    np.testing.assert_array_equal(np.concatenate([y for _, y in test]), data.load_arrays("sample").y_test)  # in order
    # Default eval batch is min(batch_size, 1000).
    assert next(iter(make_datasets("sample", batch_size=2000, num_epochs=1)[1]))[0].shape[0] == 1000


def test_eval_normalization():
    _, test_ds, _ = make_datasets("sample", batch_size=1000, num_epochs=1)
    x = np.concatenate([b[0] for b in _batches(test_ds)])
    assert np.all(np.abs(x.mean((0, 1, 2))) < 0.1), x.mean((0, 1, 2))
    assert np.all(np.abs(x.std((0, 1, 2)) - 1) < 0.1), x.std((0, 1, 2))
    arr = data.load_arrays("sample")
    mean, std = np.array(data.CIFAR10_MEAN), np.array(data.CIFAR10_STD)
    np.testing.assert_allclose(x[:7], (arr.x_test[:7] / 255.0 - mean) / std, atol=1e-5)


def test_augmentation_is_pad_crop_flip():
    aug = _batches(make_datasets("sample", batch_size=64, num_epochs=1, seed=3)[0].take(1))[0]
    plain = _batches(make_datasets("sample", batch_size=64, num_epochs=1, seed=3, augment=False)[0].take(1))[0]
    np.testing.assert_array_equal(aug[1], plain[1])  # same order, same labels
    assert aug[0].shape == plain[0].shape == (64, 32, 32, 3)
    changed = np.any(aug[0] != plain[0], axis=(1, 2, 3))
    assert changed.mean() > 0.8  # 1 in 162 draws is the identity
    # Every augmented image is a 32x32 window of the zero-padded (normalized
    # zero = -mean/std) original, possibly flipped.
    zero = (0 - np.array(data.CIFAR10_MEAN)) / np.array(data.CIFAR10_STD)
    padded = np.broadcast_to(zero, (64, 40, 40, 3)).astype(np.float32).copy()
    padded[:, 4:36, 4:36] = plain[0]
    offsets, flips = set(), set()
    for i in range(64):
        hits = [
            (dy, dx, f)
            for dy in range(9)
            for dx in range(9)
            for f in (0, 1)
            if np.allclose(
                aug[0][i], (lambda w: w[:, ::-1] if f else w)(padded[i, dy : dy + 32, dx : dx + 32]), atol=1e-5
            )
        ]
        assert hits, f"example {i} is not a crop/flip of the original"
        offsets.add(hits[0][:2])
        flips.add(hits[0][2])
    assert len(offsets) > 20 and flips == {0, 1}


def test_resume_gives_same_batches():
    steps = steps_per_epoch(make_datasets("sample", batch_size=256, num_epochs=1)[2], 256)
    full = make_datasets("sample", batch_size=256, num_epochs=4, seed=7)[0]
    resumed = make_datasets("sample", batch_size=256, num_epochs=4, seed=7, start_epoch=2)[0]
    assert len(resumed) == 2 * steps
    a = _batches(full.skip(2 * steps).take(2))
    b = _batches(resumed.take(2))
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # Same seed, rebuilt: identical; other epoch or other seed: different order.
    again = _batches(make_datasets("sample", batch_size=256, num_epochs=4, seed=7)[0].take(1))
    first = _batches(full.take(1))
    np.testing.assert_array_equal(again[0][0], first[0][0])
    np.testing.assert_array_equal(_batches(full.take(1))[0][0], first[0][0])  # re-iteration
    epoch1 = _batches(full.skip(steps).take(1))
    assert not np.array_equal(first[0][1], epoch1[0][1])
    other_seed = _batches(make_datasets("sample", batch_size=256, num_epochs=4, seed=8)[0].take(1))
    assert not np.array_equal(first[0][1], other_seed[0][1])


@pytest.mark.parametrize("feed", ["tf.data", "pydataset"])
def test_a_resume_within_an_epoch_gives_the_same_batches(feed):
    """Started at batch 3 of epoch 1 (epochs of 5: B = 1024 as 8 x 128, the
    last batch 896), the stream is the uninterrupted one from its batch 8."""
    kw = dict(batch_size=1024, num_epochs=3, seed=5, epoch_multiple=128, feed=feed)

    def stream(made):
        train = made[0]
        if feed == "pydataset":
            return [(x["images"], x["crop_flip"], y) for x, y in (train[i] for i in range(len(train)))]
        return [(x, y) for x, y in _batches(train)]

    full = stream(make_datasets("sample", **kw))
    resumed = stream(make_datasets("sample", start_epoch=1, start_batch=3, **kw))
    assert len(full) == 15 and len(resumed) == 7
    for got, want in zip(resumed, full[8:]):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    assert len(stream(make_datasets("sample", start_epoch=2, start_batch=4, **kw))) == 1
    with pytest.raises(DataError, match="start_batch"):
        make_datasets("sample", start_epoch=3, start_batch=1, **kw)


def test_keras_fit_consumes_exactly_the_epochs():
    import warnings

    import keras
    import tensorflow as tf

    batch = 1000
    train_ds, test_ds, info = make_datasets("sample", batch_size=batch, num_epochs=3, start_epoch=1)
    expected = [y for _, y in _batches(train_ds)]
    seen = []

    def record(y):
        seen.append(y.numpy())
        return y

    recorded = train_ds.map(lambda x, y: (x, tf.ensure_shape(tf.py_function(record, [y], tf.int32), y.shape)))
    model = keras.Sequential(
        [keras.Input(info.image_shape), keras.layers.Flatten(), keras.layers.Dense(info.num_classes)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hist = model.fit(
            recorded,
            epochs=3,
            initial_epoch=1,
            shuffle=False,
            steps_per_epoch=steps_per_epoch(info, batch),
            validation_data=test_ds,
            verbose=0,
        )
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    assert hist.epoch == [1, 2] and len(hist.history["val_loss"]) == 2
    # fit trained on every batch once, epoch 1 then epoch 2, with no restart
    # in between.  (On the JAX backend Keras first peeks at a batch or two to
    # build the model, then re-opens the dataset, which repeats exactly.)
    assert len(expected) == 2 * 5 and len(expected) <= len(seen) <= len(expected) + 3
    for got, want in zip(seen[-len(expected) :], expected):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------
# Epochs of whole micro-batches (epoch_multiple)
# ---------------------------------------------------------------------------


def test_epoch_sizes_with_and_without_a_last_smaller_batch():
    assert data.examples_per_epoch(45_000, 128) == 44_928  # 351 whole batches
    assert data.examples_per_epoch(45_000, 8192) == 40_960  # 5 whole batches: 9% fewer examples
    assert data.examples_per_epoch(45_000, 8192, 128) == 44_928  # the same examples as at B = 128
    info = data.DatasetInfo("x", 10, (32, 32, 3), 45_000, 10_000, ())
    assert steps_per_epoch(info, 8192) == 5 and steps_per_epoch(info, 8192, 128) == 6
    assert steps_per_epoch(info, 4096, 128) == 11 and steps_per_epoch(info, 128, 128) == 351
    # Six steps an epoch: five of 8192, the sixth of 3,968 (31 micro-batches).
    assert data.examples_after(5, 8192, 44_928) == 40_960
    assert data.examples_after(6, 8192, 44_928) == 44_928
    assert data.examples_after(6 * 10, 8192, 44_928) == 10 * 44_928
    assert data.examples_after(6 + 2, 8192, 44_928) == 44_928 + 2 * 8192
    with pytest.raises(DataError, match="epoch_multiple 100 must divide batch_size 1024"):
        make_datasets("sample", batch_size=1024, num_epochs=1, epoch_multiple=100)


def _examples(batches):
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def test_every_batch_size_of_one_micro_batch_trains_on_the_same_examples():
    kw = dict(num_epochs=2, seed=3, epoch_multiple=128)
    large = make_datasets("sample", batch_size=1024, **kw)[0]
    small = make_datasets("sample", batch_size=128, **kw)[0]
    batches = _batches(large)
    assert len(batches) == len(large) == 2 * 5
    assert [len(y) for _, y in batches] == [1024] * 4 + [896] + [1024] * 4 + [896]  # 4992 = 39 x 128 each
    assert large.element_spec[0].shape.as_list() == [None, 32, 32, 3]  # known only when the step runs
    assert small.element_spec[0].shape.as_list() == [128, 32, 32, 3]  # whole batches: static
    for epoch in range(2):
        x_large, y_large = _examples(batches[5 * epoch : 5 * epoch + 5])
        x_small, y_small = _examples(_batches(small.skip(39 * epoch).take(39)))
        np.testing.assert_array_equal(y_large, y_small)  # the same images, order and augmentation
        np.testing.assert_array_equal(x_large, x_small)
    resumed = _batches(make_datasets("sample", batch_size=1024, start_epoch=1, **kw)[0])
    assert len(resumed) == 5
    for (xa, ya), (xb, yb) in zip(batches[5:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # Without it, whole batches only, and the first four are the same.
    whole = _batches(make_datasets("sample", batch_size=1024, num_epochs=1, seed=3)[0])
    assert [len(y) for _, y in whole] == [1024] * 4
    np.testing.assert_array_equal(_examples(whole)[1], _examples(batches[:4])[1])


def test_the_pydataset_feed_keeps_the_same_last_batch():
    from sngm_keras.data.pydatasets import TrainBatches

    arrays = data.load_arrays("sample")
    kw = dict(seed=3, start_epoch=0, num_epochs=2, pad=4)
    large = TrainBatches(arrays.x_train, arrays.y_train, batch_size=1024, epoch_multiple=128, **kw)
    small = TrainBatches(arrays.x_train, arrays.y_train, batch_size=128, **kw)
    assert len(large) == 10 and len(small) == 2 * 39
    sizes = [len(large[i][1]) for i in range(len(large))]
    assert sizes == [1024] * 4 + [896] + [1024] * 4 + [896]
    for epoch in range(2):
        rows = [large[i] for i in range(5 * epoch, 5 * epoch + 5)]
        want = [small[i] for i in range(39 * epoch, 39 * epoch + 39)]
        for key in ("images", "crop_flip"):
            np.testing.assert_array_equal(
                np.concatenate([x[key] for x, _ in rows]), np.concatenate([x[key] for x, _ in want])
            )
        np.testing.assert_array_equal(np.concatenate([y for _, y in rows]), np.concatenate([y for _, y in want]))


# ---------------------------------------------------------------------------
# TFDS (mocked) and errors
# ---------------------------------------------------------------------------


def test_dataset_names_and_sizes_are_written_once():
    """The data package, the configuration's checks and the studies' estimate
    read the names, classes and split sizes of one module, which imports
    nothing (a configuration is checked without TensorFlow)."""
    from sngm_keras import dataset_names
    from sngm_keras.data import cifar_files, sources
    from sngm_keras.studies import estimate, lr_grid
    from sngm_keras.training import config_checks, dataset_fields

    names = dataset_names.DATASETS
    assert names == ("sample", "cifar10", "cifar100", "imagenet2012")
    assert data.KNOWN_DATASETS is names and sources.DATASETS is names and config_checks.DATASETS is names
    assert dataset_fields.TFDS_DATASETS is dataset_names.TFDS_DATASETS == names[1:]
    assert cifar_files.NUM_CLASSES is lr_grid.NUM_CLASSES is dataset_names.NUM_CLASSES
    assert estimate.SPLIT_SIZES is dataset_names.SPLIT_SIZES
    assert dataset_names.SPLIT_SIZES["cifar10"] == (50_000, 10_000)
    with open(dataset_names.__file__) as f:
        tree = ast.parse(f.read())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_mock_cifar10(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=100):
        train_ds, test_ds, info = make_datasets("cifar10", data_dir=tmp_path, batch_size=32, num_epochs=2)
        assert (info.name, info.num_classes, info.image_shape) == ("cifar10", 10, (32, 32, 3))
        assert (info.num_train, info.num_test) == (100, 100)
        batches = _batches(train_ds)
        assert len(batches) == 2 * 3 and batches[0][0].shape == (32, 32, 32, 3)
        assert [len(y) for _, y in _batches(test_ds)] == [32, 32, 32, 4]
        reads = []
        with data.progress.reported_to(lambda what, total: reads.append((what, total)) or (lambda count: None)):
            arr = data.load_arrays("cifar10", data_dir=tmp_path)
        assert arr.x_train.dtype == np.uint8 and arr.y_train.dtype == np.int32
        assert [what for what, _ in reads] == [f"reading cifar10 from {tmp_path}"]  # mock_data has no split sizes


def test_mock_imagenet(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=24):
        kw = dict(data_dir=tmp_path, batch_size=8, num_epochs=3, image_size=64, seed=1)
        train_ds, test_ds, info = make_datasets("imagenet2012", **kw)
        assert (info.num_classes, info.image_shape, info.num_train) == (1000, (64, 64, 3), 24)
        batches = _batches(train_ds)
        assert len(batches) == 3 * 3 == len(train_ds)
        for x, y in batches:
            assert x.shape == (8, 64, 64, 3) and x.dtype == np.float32 and y.dtype == np.int32
            assert np.all(np.isfinite(x)) and (y >= 0).all() and (y < 1000).all()
        test = _batches(test_ds)
        assert [len(y) for _, y in test] == [8, 8, 8]
        assert test[0][0].shape == (8, 64, 64, 3)
        resumed = _batches(make_datasets("imagenet2012", start_epoch=2, **kw)[0])
        assert len(resumed) == 3
        for (xa, ya), (xb, yb) in zip(batches[6:], resumed):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
        within = _batches(make_datasets("imagenet2012", start_epoch=1, start_batch=2, **kw)[0])
        assert len(within) == 4
        for (xa, ya), (xb, yb) in zip(batches[5:], within):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
        assert not np.array_equal(batches[0][0], batches[3][0])  # epochs differ
        again = _batches(train_ds.take(4))  # re-iterating repeats exactly
        for (xa, ya), (xb, yb) in zip(batches, again):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
        plain = _batches(make_datasets("imagenet2012", augment=False, **kw)[0].take(1))
        assert plain[0][0].shape == (8, 64, 64, 3)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenet2012"])
def test_tfds_missing_without_download(tmp_path, name):
    with pytest.raises(DataError, match=f"{name} not found in {tmp_path}.*download") as err:
        make_datasets(name, data_dir=tmp_path, batch_size=8, num_epochs=1)
    assert "\n" not in str(err.value)
    if name != "imagenet2012":
        with pytest.raises(DataError, match="not found"):
            data.load_arrays(name, data_dir=tmp_path)


def test_bad_inputs():
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*use one of"):
        make_datasets("mnist", batch_size=8, num_epochs=1)
    with pytest.raises(ValueError, match="unknown dataset"):  # DataError is a ValueError
        data.load_arrays("cifar-10")
    with pytest.raises(DataError, match="batch_size 6000 is larger than the 5000 training"):
        make_datasets("sample", batch_size=6000, num_epochs=1)
    with pytest.raises(DataError, match="folder ./no/such/dir not found"):
        make_datasets("./no/such/dir", batch_size=8, num_epochs=1)
    with pytest.raises(DataError, match="only supported for imagenet2012"):
        make_datasets("sample", batch_size=8, num_epochs=1, image_size=64)
    with pytest.raises(DataError, match="start_epoch"):
        make_datasets("sample", batch_size=8, num_epochs=2, start_epoch=3)
    with pytest.raises(DataError, match="does not fit in memory"):
        data.load_arrays("imagenet2012")
