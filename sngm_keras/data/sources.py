"""Resolving a ``dataset`` argument, and the TFDS availability check.

Nothing here imports TensorFlow or TFDS at module import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from sngm_keras.dataset_names import DATASETS

from . import constants as C
from .errors import DataError


class Source(NamedTuple):
    kind: str  # "sample" | "folder" | "tfds"
    name: str  # canonical dataset name, or the folder path as given
    path: Path | None = None  # folder root, for kind == "folder"


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith((".", "~")) or (os.altsep is not None and os.altsep in text)


def resolve(dataset) -> Source:
    """Maps "sample", "cifar10", "cifar100", "imagenet2012" or a folder path
    (str or os.PathLike) to a `Source`; raises `DataError` otherwise."""
    if isinstance(dataset, os.PathLike):
        dataset = os.fspath(dataset)
    if not isinstance(dataset, str) or not dataset:
        raise DataError(
            f"dataset must be a name or a folder path, got {dataset!r}; "
            f"use one of {', '.join(DATASETS)} or a folder with "
            "train/ and test/ class sub-folders"
        )
    lowered = dataset.lower()
    if lowered in DATASETS and not _looks_like_path(dataset):
        return Source("sample" if lowered == C.SAMPLE else "tfds", lowered)
    path = Path(dataset).expanduser()
    if path.is_dir():
        for split in ("train", test_split_name(path)):
            if not (path / split).is_dir():
                raise DataError(
                    f"folder {dataset} has no {split}/ sub-folder; lay it out as DIR/{{train,test}}/<class>/<image>"
                )
        return Source("folder", dataset, path)
    if _looks_like_path(dataset) or path.exists():
        raise DataError(
            f"dataset folder {dataset} not found; pass an existing folder "
            "laid out as DIR/{train,test}/<class>/<image>, or one of "
            f"{', '.join(DATASETS)}"
        )
    raise DataError(
        f"unknown dataset {dataset!r}; use one of "
        f"{', '.join(DATASETS)} or a folder path with "
        "train/ and test/ class sub-folders"
    )


def test_split_name(root: Path) -> str:
    """A folder's test split: ``test``, or ``val`` where only that one exists
    (ImageNet's usual name)."""
    return "val" if not (root / "test").is_dir() and (root / "val").is_dir() else "test"


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:  # pragma: no cover - it is a dependency
        raise DataError("tensorflow_datasets is not installed; pip install tensorflow-datasets") from err
    return tfds


def _data_dir_text(data_dir) -> str:
    if data_dir:
        return str(data_dir)
    tfds = _import_tfds()
    return f"{tfds.core.constants.DATA_DIR} (the TFDS default)"


#: The official python-version archive of each CIFAR, named in messages.
CIFAR_ARCHIVES = {C.CIFAR10: "cifar-10-python.tar.gz", C.CIFAR100: "cifar-100-python.tar.gz"}


def not_found_message(name: str, data_dir) -> str:
    """The one line of a missing TFDS dataset, naming the commands that fix it."""
    where = _data_dir_text(data_dir)
    root = str(data_dir) if data_dir else _import_tfds().core.constants.DATA_DIR
    if name == C.IMAGENET:
        return (
            f"{name} not found in {where}; TFDS cannot download it: put "
            "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
            f"{os.path.join(root, 'downloads', 'manual')} and pass --download once to prepare it"
        )
    return (
        f"{name} not found in {where}; pass --download to fetch it, or import a copy you have "
        f"offline with: python -m apps.import_data --source={CIFAR_ARCHIVES.get(name, 'ARCHIVE')} "
        f"--data_dir={root}"
    )


def tfds_builder(name: str, data_dir=None, download: bool = False):
    """Returns ``(builder, prepared)`` for a TFDS dataset.

    With ``download=True`` runs ``download_and_prepare`` first.  With
    ``download=False`` nothing is fetched; ``prepared`` says whether the data
    is already in ``data_dir`` (`builder.is_prepared()`).  Callers load with
    `load_or_raise`, which turns a failed load of unprepared data into a
    one-line `DataError` (loading is still attempted, so that
    ``tfds.testing.mock_data`` works).
    """
    tfds = _import_tfds()
    builder = tfds.builder(name, data_dir=os.fspath(data_dir) if data_dir else None)
    if download:
        try:
            builder.download_and_prepare()
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if name == C.IMAGENET:
                raise DataError(not_found_message(name, data_dir) + f" ({first})") from err
            raise DataError(
                f"could not download/prepare {name} into "
                f"{_data_dir_text(data_dir)}: {first}; check network access, or import a "
                f"copy you have offline with: python -m apps.import_data "
                f"--source={CIFAR_ARCHIVES.get(name, 'ARCHIVE')} --data_dir=DIR"
            ) from err
        return builder, True
    return builder, builder.is_prepared()


def load_or_raise(name: str, data_dir, prepared: bool, load):
    """Calls ``load()``; if the data was not prepared and loading fails,
    raises the one-line "not found" `DataError` instead."""
    try:
        return load()
    except Exception as err:
        if prepared:
            raise
        raise DataError(not_found_message(name, data_dir)) from err
