"""Reading a local copy of CIFAR-10/100 in the official formats, no network.

Accepted, as the CIFAR site ships them and Keras / PyTorch cache them:

- the python version: ``cifar-10-python.tar.gz`` or its extracted
  ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``,
  ``batches.meta``); ``cifar-100-python.tar.gz`` or ``cifar-100-python/``
  (``train``, ``test``, ``meta``);
- the binary version (what TFDS downloads): ``cifar-10-binary.tar.gz`` or
  ``cifar-10-batches-bin/``; ``cifar-100-binary.tar.gz`` or
  ``cifar-100-binary/``;
- a folder holding one of those folders or archives (e.g. a PyTorch
  ``root``).

The python batches are pickles; they are read with an unpickler that builds
nothing but NumPy arrays, lists, dicts and strings, so a file that is not
what it claims to be cannot run code.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sngm_keras.dataset_names import NUM_CLASSES

from .arrays import ArraySplits
from .errors import DataError

IMAGE_BYTES = 32 * 32 * 3

# (dataset, format): the folder name inside the archive, the training and
# test files, and the file(s) with the class names.
LAYOUTS = {
    ("cifar10", "python"): (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        ("batches.meta",),
    ),
    ("cifar100", "python"): ("cifar-100-python", ("train",), ("test",), ("meta",)),
    ("cifar10", "binary"): (
        "cifar-10-batches-bin",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        ("test_batch.bin",),
        ("batches.meta.txt",),
    ),
    ("cifar100", "binary"): (
        "cifar-100-binary",
        ("train.bin",),
        ("test.bin",),
        ("coarse_label_names.txt", "fine_label_names.txt"),
    ),
}
ARCHIVES = {
    "cifar-10-python.tar.gz": ("cifar10", "python"),
    "cifar-100-python.tar.gz": ("cifar100", "python"),
    "cifar-10-binary.tar.gz": ("cifar10", "binary"),
    "cifar-100-binary.tar.gz": ("cifar100", "binary"),
}
NUM_COARSE_CLASSES = 20


@dataclass(frozen=True)
class CifarCopy:
    """One local copy of CIFAR-10 or CIFAR-100, in memory.

    ``arrays`` holds the images (uint8 NHWC) and the labels (CIFAR-100: the
    fine, 100-class ones); CIFAR-100 also has its 20 coarse labels here."""

    name: str
    arrays: ArraySplits
    coarse_train: np.ndarray | None = None
    coarse_test: np.ndarray | None = None
    coarse_names: tuple | None = None


class _ArraysOnly(pickle.Unpickler):
    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR batch")


def _unpickle(data: bytes, what) -> dict:
    try:
        loaded = _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:
        raise DataError(f"{what} is not a CIFAR python batch ({err}); pass the official file, unchanged") from err
    if not isinstance(loaded, dict):
        raise DataError(f"{what} is not a CIFAR python batch (no dict inside)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in loaded.items()}


def _names(values) -> tuple:
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


class _Files:
    """The members of one layout, in an archive or a folder."""

    def __init__(self, read, where):
        self.read = read  # member name -> bytes, or None when absent
        self.where = where  # for messages

    def get(self, name):
        data = self.read(name)
        if data is None:
            raise DataError(f"{self.where} has no {name}; pass the whole, unchanged archive or folder")
        return data


def _images(flat: np.ndarray, what) -> np.ndarray:
    flat = np.asarray(flat, dtype=np.uint8)
    if flat.ndim != 2 or flat.shape[1] != IMAGE_BYTES:
        raise DataError(f"{what} holds images of {flat.shape[1:] or '?'} bytes, not 32x32x3 = {IMAGE_BYTES}")
    return flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # stored as R, G, B planes


def _read_python(name, files: _Files, train_files, test_files, meta_files):
    meta = _unpickle(files.get(meta_files[0]), f"{files.where}/{meta_files[0]}")
    key = "label_names" if name == "cifar10" else "fine_label_names"
    splits = {}
    for split, members in (("train", train_files), ("test", test_files)):
        images, fine, coarse = [], [], []
        for member in members:
            batch = _unpickle(files.get(member), f"{files.where}/{member}")
            what = f"{files.where}/{member}"
            if "data" not in batch:
                raise DataError(f"{what} is not a CIFAR python batch (no data)")
            images.append(_images(batch["data"], what))
            fine.append(np.asarray(batch["labels" if name == "cifar10" else "fine_labels"], np.int32))
            if name == "cifar100":
                coarse.append(np.asarray(batch["coarse_labels"], np.int32))
        splits[split] = (np.concatenate(images), np.concatenate(fine), np.concatenate(coarse) if coarse else None)
    coarse_names = _names(meta["coarse_label_names"]) if name == "cifar100" else None
    return splits, _names(meta[key]), coarse_names


def _read_binary(name, files: _Files, train_files, test_files, meta_files):
    labels = 1 if name == "cifar10" else 2  # CIFAR-100 records: coarse label, fine label, image
    names = [_names(line for line in files.get(m).decode().split("\n") if line.strip()) for m in meta_files]
    splits = {}
    for split, members in (("train", train_files), ("test", test_files)):
        raw = np.frombuffer(b"".join(files.get(m) for m in members), np.uint8)
        if raw.size % (labels + IMAGE_BYTES):
            raise DataError(
                f"the {split} files in {files.where} are not whole CIFAR records "
                f"({labels} label byte(s) and {IMAGE_BYTES} image bytes each)"
            )
        records = raw.reshape(-1, labels + IMAGE_BYTES)
        splits[split] = (
            _images(records[:, labels:], files.where),
            records[:, labels - 1].astype(np.int32),
            records[:, 0].astype(np.int32) if labels == 2 else None,
        )
    return splits, names[-1], (names[0] if name == "cifar100" else None)


def _detect(path: Path):
    """(dataset, format, _Files) for a CIFAR archive or folder, or None."""
    if path.is_file():
        if not tarfile.is_tarfile(path):
            return None
        with tarfile.open(path) as tar:
            members = {m.name.lstrip("./"): m for m in tar.getmembers() if m.isfile()}
            for (name, fmt), (folder, train, test, meta) in LAYOUTS.items():
                if f"{folder}/{test[0]}" in members:
                    data = {}
                    for member in (*train, *test, *meta):
                        info = members.get(f"{folder}/{member}")
                        data[member] = tar.extractfile(info).read() if info is not None else None
                    return name, fmt, _Files(data.get, str(path))
        return None
    for (name, fmt), (folder, _train, test, meta) in LAYOUTS.items():
        for root in (path, path / folder):
            if (root / test[0]).is_file() and (root / meta[0]).is_file():
                return (
                    name,
                    fmt,
                    _Files(lambda m, r=root: (r / m).read_bytes() if (r / m).is_file() else None, str(root)),
                )
    for archive in ARCHIVES:
        if (path / archive).is_file():
            return _detect(path / archive)
    return None


def is_cifar_copy(path) -> bool:
    """Whether `path` is a CIFAR archive or folder that `read_cifar` reads."""
    path = Path(path).expanduser()
    if path.is_dir():
        return any(
            (path / folder).is_dir() or (path / test[0]).is_file() for folder, _, test, _ in LAYOUTS.values()
        ) or any((path / a).is_file() for a in ARCHIVES)
    return path.name in ARCHIVES or (path.is_file() and tarfile.is_tarfile(path))


def read_cifar(path) -> CifarCopy:
    """Reads a local CIFAR-10/100 copy (see the module docstring) into memory.

    Raises:
      DataError with a one-line message when `path` is none of those or a
      file in it is damaged.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path} not found")
    try:
        found = _detect(path)
    except (OSError, EOFError, tarfile.TarError, zlib.error) as err:
        raise DataError(
            f"cannot read {path} ({type(err).__name__}: {err}); pass the official archive, whole and unchanged"
        ) from err
    if found is None:
        raise DataError(
            f"{path} is not a CIFAR-10/100 copy: expected {', '.join(ARCHIVES)} or a folder "
            f"{', '.join(f[0] for f in LAYOUTS.values())}"
        )
    name, fmt, files = found
    folder, train, test, meta = LAYOUTS[(name, fmt)]
    reader = _read_python if fmt == "python" else _read_binary
    try:
        splits, class_names, coarse_names = reader(name, files, train, test, meta)
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(
            f"cannot read {files.where} as {name} ({type(err).__name__}: {err}); pass the official file, unchanged"
        ) from err
    if len(class_names) != NUM_CLASSES[name]:
        raise DataError(f"{files.where} names {len(class_names)} classes; {name} has {NUM_CLASSES[name]}")
    for split, (x, y, coarse) in splits.items():
        if len(x) != len(y) or (y.size and not 0 <= y.min() <= y.max() < NUM_CLASSES[name]):
            raise DataError(f"the {split} labels in {files.where} do not match its images or classes")
        if coarse is not None and coarse.size and not 0 <= coarse.min() <= coarse.max() < NUM_COARSE_CLASSES:
            raise DataError(f"the {split} coarse labels in {files.where} are not in 0..{NUM_COARSE_CLASSES - 1}")
    (x_train, y_train, c_train), (x_test, y_test, c_test) = splits["train"], splits["test"]
    arrays = ArraySplits(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=len(class_names),
        class_names=class_names,
        image_shape=(32, 32, 3),
    )
    return CifarCopy(name, arrays, c_train, c_test, coarse_names)
