"""Turning a local copy of a dataset into what `load_arrays` / `make_datasets`
read, with no network:

- `prepare_tfds(copy, data_dir)`: a `CifarCopy` (see `cifar_files`) becomes
  TFDS's prepared ``cifar10`` / ``cifar100`` in ``data_dir``, built by TFDS's
  own builder, so ``dataset="cifar10", data_dir=data_dir`` loads it as if TFDS
  had downloaded it;
- `write_image_folders(arrays, out_dir)`: any in-memory splits become the
  folder layout ``out_dir/{train,test}/<class>/<n>.png`` (lossless);
- `split_class_folders(source, out_dir, test_fraction, seed)`: a folder of
  images per class (``source/<class>/<image>``) becomes that layout, each
  class's images split at random into train and test, the files copied as
  they are.

Outputs are written beside their target and renamed into place at the end,
so a failure leaves nothing half-written; an existing, non-empty target is
refused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from sngm_keras import checks

from . import sources
from .arrays import IMAGE_SUFFIXES, ArraySplits
from .cifar_files import LAYOUTS, CifarCopy
from .errors import DataError, as_data_errors


def _check_new_folder(path: Path, what):
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise DataError(f"{what} {path} already exists and is not empty; pick a new folder")


class _Staged:
    """A temporary folder next to `target`, renamed to it on success."""

    def __init__(self, target: Path):
        self.target = target

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.incomplete-", dir=self.target.parent))
        return self.path

    def __exit__(self, kind, error, trace):
        if kind is None:
            if self.target.exists():
                self.target.rmdir()  # checked empty before
            os.replace(self.path, self.target)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


# --------------------------------------------------------------------------
# TFDS
# --------------------------------------------------------------------------


def _write_binary_files(copy: CifarCopy, folder: Path):
    """The CIFAR binary version (TFDS's download) of `copy`, in `folder`."""
    _, train_files, test_files, meta_files = LAYOUTS[(copy.name, "binary")]
    a = copy.arrays

    def records(x, y, coarse):
        planes = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # R, G, B planes
        labels = [y[:, None]] if coarse is None else [coarse[:, None], y[:, None]]
        return np.concatenate([*[column.astype(np.uint8) for column in labels], planes], axis=1)

    folder.mkdir(parents=True)
    train = records(a.x_train, a.y_train, copy.coarse_train)
    for name, chunk in zip(train_files, np.array_split(train, len(train_files))):
        chunk.tofile(folder / name)
    records(a.x_test, a.y_test, copy.coarse_test).tofile(folder / test_files[0])
    names = [a.class_names] if copy.name == "cifar10" else [copy.coarse_names, a.class_names]
    for meta, classes in zip(meta_files, names):
        (folder / meta).write_text("\n".join(classes) + "\n")


class _LocalFiles:
    """Stands in for TFDS's download manager: the archive is already here."""

    def __init__(self, extracted: Path):
        self.extracted = extracted

    def download_and_extract(self, url):
        return str(self.extracted)


def _local_builder_class(name):
    import tensorflow_datasets as tfds

    registered = tfds.builder_cls(name)

    class LocalCopy(registered, skip_registration=True):
        # TFDS's own builder under its own name, reading the extracted files
        # from `extracted` instead of the network.
        extracted = None

        def _split_generators(self, dl_manager):
            return super()._split_generators(_LocalFiles(self.extracted))

    LocalCopy.name = name
    return LocalCopy


def prepare_tfds(copy: CifarCopy, data_dir) -> str:
    """Prepares TFDS's ``copy.name`` in `data_dir` from `copy`; returns the
    prepared dataset's folder. Refuses a `data_dir` where it is prepared."""
    tfds = sources._import_tfds()
    data_dir = Path(data_dir).expanduser()
    if tfds.builder(copy.name, data_dir=os.fspath(data_dir)).is_prepared():
        raise DataError(f"{copy.name} is already prepared in {data_dir}; use it as it is, or pick another data_dir")
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sngm-import-", dir=data_dir) as tmp:
        tmp = Path(tmp)
        _write_binary_files(copy, tmp / "extracted" / LAYOUTS[(copy.name, "binary")][0])
        builder_class = _local_builder_class(copy.name)
        builder_class.extracted = tmp / "extracted"
        builder = builder_class(data_dir=os.fspath(data_dir))
        builder.download_and_prepare(
            download_dir=os.fspath(tmp / "downloads"),
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
        return os.fspath(builder.data_dir)


# --------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------


def write_image_folders(arrays: ArraySplits, out_dir) -> Path:
    """Writes `arrays` as ``out_dir/{train,test}/<class>/<n>.png``."""
    from PIL import Image

    out_dir = Path(out_dir).expanduser()
    _check_new_folder(out_dir, "output folder")
    with _Staged(out_dir) as staging:
        for split in ("train", "test"):
            x, y = getattr(arrays, f"x_{split}"), getattr(arrays, f"y_{split}")
            for name in arrays.class_names:
                (staging / split / name).mkdir(parents=True)
            for i, (image, label) in enumerate(zip(x, y)):
                Image.fromarray(image).save(staging / split / arrays.class_names[label] / f"{i:05d}.png")
    return out_dir


def split_class_folders(source, out_dir, test_fraction: float, seed: int = 0) -> dict:
    """Copies ``source/<class>/<image>`` into ``out_dir/{train,test}/<class>/``:
    of each class's images (sorted by name, then shuffled with `seed`)
    ``round(n * test_fraction)`` (at least one, at most n - 1) go to test.
    Returns {split: number of images}."""
    source, out_dir = Path(source).expanduser(), Path(out_dir).expanduser()
    with as_data_errors():
        checks.check_fraction("test_fraction", test_fraction)
    if (source / "train").is_dir() and (source / "test").is_dir():
        raise DataError(f"{source} already has train/ and test/: use it as the dataset folder as it is")
    classes = sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{source} needs a sub-folder of images per class, at least two; found {len(classes)}")
    files = {
        c: sorted(f for f in (source / c).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        for c in classes
    }
    few = [c for c, fs in files.items() if len(fs) < 2]
    if few:
        raise DataError(
            f"class folder {source / few[0]} has fewer than 2 images; each class needs one "
            "for training and one for testing"
        )
    _check_new_folder(out_dir, "output folder")
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "test": 0}
    with _Staged(out_dir) as staging:
        for name in classes:
            order = rng.permutation(len(files[name]))
            n_test = min(len(order) - 1, max(1, round(len(order) * test_fraction)))
            for rank, index in enumerate(order):
                split = "test" if rank < n_test else "train"
                (staging / split / name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(files[name][index], staging / split / name / files[name][index].name)
                counts[split] += 1
    return counts
