"""Importing a local dataset copy without network: CIFAR-10/100 in the official
python and binary formats (archive or folder) into TFDS's prepared data or a
--dataset folder, and a folder of images per class into train/test folders.
The copies are small ones the tests write in those formats."""

import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from sngm_keras import data
from sngm_keras.data import DataError, importing, read_cifar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def random_split(rng, n, classes):
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, classes, n).astype(np.int32)


def batch_pickle(path, entries):
    """A batch as the CIFAR site's python version stores it: a Python 2 style
    pickle (protocol 2, bytes keys) of lists and a uint8 (N, 3072) array of
    R, G, B planes."""
    with open(path, "wb") as f:
        pickle.dump({k.encode(): v for k, v in entries.items()}, f, protocol=2)


def planes(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1))


def write_cifar10_python(root, x_train, y_train, x_test, y_test):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, idx in enumerate(np.array_split(np.arange(len(x_train)), 5), start=1):
        batch_pickle(
            folder / f"data_batch_{i}",
            {"batch_label": b"training batch", "labels": y_train[idx].tolist(), "data": planes(x_train[idx])},
        )
    batch_pickle(
        folder / "test_batch", {"batch_label": b"testing batch", "labels": y_test.tolist(), "data": planes(x_test)}
    )
    batch_pickle(folder / "batches.meta", {"label_names": [c.encode() for c in CIFAR10_CLASSES], "num_vis": 3072})
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return folder, archive


def write_cifar100_python(root, x_train, fine_train, coarse_train, x_test, fine_test, coarse_test):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, x, fine, coarse in (
        ("train", x_train, fine_train, coarse_train),
        ("test", x_test, fine_test, coarse_test),
    ):
        batch_pickle(
            folder / split, {"fine_labels": fine.tolist(), "coarse_labels": coarse.tolist(), "data": planes(x)}
        )
    batch_pickle(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
            "coarse_label_names": [f"coarse{i:02d}".encode() for i in range(20)],
        },
    )
    return folder


def examples(x, *labels):
    """The examples as a sorted list of bytes: a multiset, whatever the order."""
    return sorted(bytes(np.asarray(ls, np.uint8)) + img.tobytes() for img, *ls in zip(x, *labels))


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    rng = np.random.default_rng(0)
    (x_train, y_train), (x_test, y_test) = random_split(rng, 23, 10), random_split(rng, 7, 10)
    folder, archive = write_cifar10_python(root, x_train, y_train, x_test, y_test)
    return dict(
        root=root, folder=folder, archive=archive, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
    )


def assert_same_arrays(arrays, c):
    np.testing.assert_array_equal(arrays.x_train, c["x_train"])
    np.testing.assert_array_equal(arrays.y_train, c["y_train"])
    np.testing.assert_array_equal(arrays.x_test, c["x_test"])
    np.testing.assert_array_equal(arrays.y_test, c["y_test"])


def test_read_cifar10_archive_folder_and_parent_binary_too(cifar10, tmp_path):
    for path in (cifar10["archive"], cifar10["folder"], cifar10["root"]):
        copy = read_cifar(path)
        assert copy.name == "cifar10" and copy.arrays.class_names == tuple(CIFAR10_CLASSES), path
        assert_same_arrays(copy.arrays, cifar10)
    # The binary version (TFDS's download), as written for TFDS, reads back the same.
    importing._write_binary_files(copy, tmp_path / "cifar-10-batches-bin")
    assert sorted(os.listdir(tmp_path / "cifar-10-batches-bin")) == sorted(
        [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin", "batches.meta.txt"]
    )
    assert os.path.getsize(tmp_path / "cifar-10-batches-bin" / "test_batch.bin") == 7 * 3073
    assert_same_arrays(read_cifar(tmp_path).arrays, cifar10)


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_read_refuses_what_is_not_a_cifar_copy(tmp_path):
    with pytest.raises(DataError, match="not a CIFAR-10/100 copy"):
        read_cifar(tmp_path)
    rng = np.random.default_rng(3)
    folder, archive = write_cifar10_python(tmp_path, *random_split(rng, 5, 10), *random_split(rng, 2, 10))
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="cannot read .*cifar-10-python.tar.gz .*whole and unchanged"):
        read_cifar(archive)
    archive.unlink()
    marker = tmp_path / "code-ran"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": RunsCode(marker)}, f, protocol=2)
    with pytest.raises(DataError, match="test_batch is not a CIFAR python batch .*system is not part of a CIFAR batch"):
        read_cifar(folder)
    assert not marker.exists()
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="test_batch is not a CIFAR python batch"):
        read_cifar(folder)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="not a CIFAR-10/100 copy"):
        read_cifar(folder)


def test_cifar100_python_to_tfds_keeps_fine_and_coarse_labels(tmp_path):
    rng = np.random.default_rng(1)
    x_train, fine_train = random_split(rng, 12, 100)
    x_test, fine_test = random_split(rng, 5, 100)
    coarse_train, coarse_test = fine_train // 5, fine_test // 5
    folder = write_cifar100_python(tmp_path / "copy", x_train, fine_train, coarse_train, x_test, fine_test, coarse_test)
    copy = read_cifar(folder)
    assert copy.name == "cifar100" and copy.arrays.class_names[3] == "fine03" and copy.coarse_names[19] == "coarse19"
    np.testing.assert_array_equal(copy.coarse_test, coarse_test)

    importing.prepare_tfds(copy, tmp_path / "tfds")
    loaded = data.load_arrays("cifar100", data_dir=tmp_path / "tfds")
    assert loaded.class_names == copy.arrays.class_names
    assert examples(loaded.x_train, loaded.y_train) == examples(x_train, fine_train)
    import tensorflow_datasets as tfds

    test = list(tfds.as_numpy(tfds.builder("cifar100", data_dir=str(tmp_path / "tfds")).as_dataset(split="test")))
    got = examples(np.stack([e["image"] for e in test]), [e["coarse_label"] for e in test], [e["label"] for e in test])
    assert got == examples(x_test, coarse_test, fine_test)
    assert sorted(os.listdir(tmp_path / "tfds")) == ["cifar100"]  # nothing else left behind


def app(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the app's own default
    return subprocess.Popen(
        [sys.executable, "-m", "apps.import_data", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process):
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def write_class_folders(root, counts):
    rng = np.random.default_rng(2)
    files = {}
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            path = root / name / f"img{i}.png"
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
            files[(name, path.name)] = path.read_bytes()
    return files


def test_import_app_offline_routes(cifar10, tmp_path):
    tfds_dir, png_dir, split_dir = tmp_path / "tfds", tmp_path / "png", tmp_path / "split"
    originals = write_class_folders(tmp_path / "by_class", {"cat": 5, "dog": 4, "owl": 2})
    to_tfds = app(f"--source={cifar10['archive']}", f"--data_dir={tfds_dir}")
    to_png = app(f"--source={cifar10['folder']}", f"--output_dir={png_dir}")
    to_split = app(f"--source={tmp_path / 'by_class'}", f"--output_dir={split_dir}", "--test_fraction=0.25")

    code, out, err = finish(to_tfds)
    assert code == 0, err[-3000:]
    assert f"--dataset=cifar10 --data_dir={tfds_dir}" in out
    loaded = data.load_arrays("cifar10", data_dir=tfds_dir)
    assert loaded.class_names == tuple(CIFAR10_CLASSES)
    assert examples(loaded.x_train, loaded.y_train) == examples(cifar10["x_train"], cifar10["y_train"])
    assert examples(loaded.x_test, loaded.y_test) == examples(cifar10["x_test"], cifar10["y_test"])
    again = app(f"--source={cifar10['folder']}", f"--data_dir={tfds_dir}")

    code, out, err = finish(to_png)
    assert code == 0, err[-3000:]
    loaded = data.load_arrays(str(png_dir))
    assert loaded.class_names == tuple(CIFAR10_CLASSES)  # CIFAR-10's order is alphabetical: same indices
    assert examples(loaded.x_train, loaded.y_train) == examples(cifar10["x_train"], cifar10["y_train"])
    assert examples(loaded.x_test, loaded.y_test) == examples(cifar10["x_test"], cifar10["y_test"])

    code, out, err = finish(to_split)
    assert code == 0, err[-3000:]
    copied = {(p.parent.name, p.name): (p.parent.parent.name, p.read_bytes()) for p in split_dir.glob("*/*/*")}
    assert {k: v for k, (_, v) in copied.items()} == originals  # each image once, unchanged
    tests = {
        name: sum(1 for (c, _), (s, _) in copied.items() if c == name and s == "test") for name in ("cat", "dog", "owl")
    }
    assert tests == {"cat": 1, "dog": 1, "owl": 1}  # round(n / 4), at least one
    assert data.load_arrays(str(split_dir)).num_train == 8

    bad = [
        app(f"--source={tmp_path / 'by_class'}", f"--data_dir={tmp_path / 'x'}"),
        app(f"--source={cifar10['archive']}", f"--output_dir={png_dir}"),
    ]
    for process, flag in zip([again] + bad, ["--data_dir", "--data_dir", "--output_dir"]):
        code, out, err = finish(process)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {flag}"), (flag, err[-2000:])
    assert not (tmp_path / "x").exists()
    assert sorted(os.listdir(tmp_path)) == ["by_class", "png", "split", "tfds"]


@pytest.mark.parametrize(
    "name, archive", [("cifar10", "cifar-10-python.tar.gz"), ("cifar100", "cifar-100-python.tar.gz")]
)
def test_missing_data_points_at_the_offline_command(tmp_path, name, archive):
    with pytest.raises(DataError) as error:
        data.load_arrays(name, data_dir=tmp_path)
    message = str(error.value)
    assert "--download" in message and "download=True" not in message
    assert message.endswith(f"python -m apps.import_data --source={archive} --data_dir={tmp_path}")
