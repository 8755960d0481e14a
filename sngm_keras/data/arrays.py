"""In-memory uint8 arrays: the embedded sample, image folders, TFDS CIFAR.

The sample and folder paths need only numpy and Pillow; TensorFlow Datasets
(and with it TensorFlow) is imported only when a TFDS dataset is asked for.
"""

from __future__ import annotations

import functools
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sngm_keras import checks

from . import constants as C
from . import progress, sources
from .errors import DataError, as_data_errors

#: The embedded CIFAR-10 sample (see sngm_keras/sample_data/README.md).
SAMPLE_PATH = Path(__file__).resolve().parent.parent / "sample_data" / "cifar10_sample.npz"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ArraySplits:
    """Train and test splits held in memory.

    ``x_*`` are uint8 NHWC (RGB), ``y_*`` int32 class indices into
    ``class_names``; ``image_shape`` is ``(H, W, C)``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple
    image_shape: tuple

    @property
    def num_train(self) -> int:
        return len(self.x_train)

    @property
    def num_test(self) -> int:
        return len(self.x_test)


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _decode(data: bytes, what) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as err:
        raise DataError(f"cannot decode image {what}: {err}; remove or replace that file") from err


def _stack(images, what) -> np.ndarray:
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        shapes = sorted(shapes)
        raise DataError(
            f"images in {what} have different sizes "
            f"({shapes[0][1]}x{shapes[0][0]} and {shapes[-1][1]}x{shapes[-1][0]}); "
            "resize them all to one size first"
        )
    return np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8)


# --------------------------------------------------------------------------
# Embedded sample
# --------------------------------------------------------------------------


def read_sample_file(path=SAMPLE_PATH) -> dict:
    """Returns the raw arrays of the sample file (JPEG bytes, offsets, labels)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"embedded sample {path} is missing; rebuild it with "
            "`python tools/make_sample.py --source=cifar10_jpeg.tar.xz "
            "--out=sngm_keras/sample_data`"
        )
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def sample_jpegs(split: str, raw: dict | None = None) -> list[bytes]:
    """The original JPEG files of one split of the sample, in stored order."""
    raw = read_sample_file() if raw is None else raw
    data, offsets = raw[f"{split}_bytes"], raw[f"{split}_offsets"]
    return [data[offsets[i] : offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]


def _load_sample() -> ArraySplits:
    """Decodes the sample (once per process) and returns fresh copies."""
    cached = _decoded_sample()
    return ArraySplits(
        x_train=cached.x_train.copy(),
        y_train=cached.y_train.copy(),
        x_test=cached.x_test.copy(),
        y_test=cached.y_test.copy(),
        num_classes=cached.num_classes,
        class_names=cached.class_names,
        image_shape=cached.image_shape,
    )


@functools.lru_cache(maxsize=1)
def _decoded_sample() -> ArraySplits:
    raw = read_sample_file()
    out = {}
    with ThreadPoolExecutor(_workers()) as pool:
        for split in ("train", "test"):
            blobs = sample_jpegs(split, raw)
            labels = (f"#{i} of the sample" for i in range(len(blobs)))
            images = list(pool.map(_decode, blobs, labels))
            out[f"x_{split}"] = _stack(images, "the sample")
            out[f"y_{split}"] = raw[f"{split}_labels"].astype(np.int32)
    class_names = tuple(str(c) for c in raw["class_names"])
    return ArraySplits(
        **out, num_classes=len(class_names), class_names=class_names, image_shape=tuple(out["x_train"].shape[1:])
    )


# --------------------------------------------------------------------------
# Image folders: DIR/{train,test}/<class>/<image>
# --------------------------------------------------------------------------


def _folder_classes(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _folder_images(split_dir: Path, class_names, shown: str):
    """(image files, their labels) of one split's class folders."""
    files, labels = [], []
    for label, cls in enumerate(class_names):
        for f in sorted((split_dir / cls).iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(label)
    if not files:
        raise DataError(
            f"no images found under {shown}; expected files ending in {', '.join(IMAGE_SUFFIXES)} in its class folders"
        )
    return files, labels


def _load_folder(root: Path, shown: str) -> ArraySplits:
    test = sources.test_split_name(root)
    classes = {s: _folder_classes(root / s) for s in ("train", test)}
    if classes["train"] != classes[test]:
        only_train = sorted(set(classes["train"]) - set(classes[test]))
        only_test = sorted(set(classes[test]) - set(classes["train"]))
        raise DataError(
            f"class folders differ between {shown}/train and {shown}/{test} "
            f"(only in train: {only_train or '-'}, only in test: {only_test or '-'}); "
            "give both splits the same class sub-folders"
        )
    class_names = classes["train"]
    if not class_names:
        raise DataError(f"{shown}/train has no class sub-folders; lay it out as DIR/{{train,test}}/<class>/<image>")
    if len(class_names) < 2:
        raise DataError(f"{shown} has one class folder ({class_names[0]}); a classifier needs at least two")
    listed = {split: _folder_images(root / split, class_names, f"{shown}/{split}") for split in ("train", test)}
    advance = progress.start(
        f"reading {shown}: {len(listed['train'][0]):,} training and {len(listed[test][0]):,} test images",
        sum(len(files) for files, _ in listed.values()),
    )
    out = {}
    with ThreadPoolExecutor(_workers()) as pool:
        for split, (files, labels) in listed.items():
            images = []
            for image in pool.map(lambda f: _decode(f.read_bytes(), f), files):
                images.append(image)
                advance(1)
            name = "train" if split == "train" else "test"
            out[f"x_{name}"] = _stack(images, f"{shown}/{split}")
            out[f"y_{name}"] = np.asarray(labels, dtype=np.int32)
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise DataError(
            f"train images in {shown} are {out['x_train'].shape[1:]} but test images "
            f"are {out['x_test'].shape[1:]}; resize them to one size first"
        )
    return ArraySplits(
        **out, num_classes=len(class_names), class_names=tuple(class_names), image_shape=tuple(out["x_train"].shape[1:])
    )


# --------------------------------------------------------------------------
# TFDS CIFAR-10 / CIFAR-100
# --------------------------------------------------------------------------


def _load_tfds(name: str, data_dir, download: bool) -> ArraySplits:
    builder, prepared = sources.tfds_builder(name, data_dir, download)
    tfds = sources._import_tfds()

    def load():
        # Like `tfds.as_numpy(tfds.load(..., batch_size=-1))`, in chunks: with
        # batch_size=-1 TFDS batches by the split size from its metadata, which
        # `tfds.testing.mock_data` does not have (it then aborts the process).
        splits = builder.info.splits
        total = sum(splits[s].num_examples for s in ("train", "test") if s in splits)
        out, advance = [], None
        for split in ("train", "test"):
            ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
            if advance is None:  # said once the data is found
                advance = progress.start(f"reading {name} from {sources._data_dir_text(data_dir)}", total)
            chunks = []
            for chunk in tfds.as_numpy(ds.batch(10_000)):
                chunks.append(chunk)
                advance(len(chunk[1]))
            if not chunks:
                raise DataError(
                    f"the {split} split of {name} in {sources._data_dir_text(data_dir)} is empty; prepare it again"
                )
            out.append(tuple(np.concatenate(parts) for parts in zip(*chunks)))
        return out

    (x_train, y_train), (x_test, y_test) = sources.load_or_raise(name, data_dir, prepared, load)
    class_names = tuple(builder.info.features["label"].names)
    return ArraySplits(
        x_train=np.asarray(x_train, np.uint8),
        y_train=np.asarray(y_train, np.int32),
        x_test=np.asarray(x_test, np.uint8),
        y_test=np.asarray(y_test, np.int32),
        num_classes=len(class_names),
        class_names=class_names,
        image_shape=tuple(int(d) for d in x_train.shape[1:]),
    )


def load_arrays(dataset, data_dir=None, download: bool = False) -> ArraySplits:
    """Loads a whole dataset into memory as uint8 arrays.

    Args:
      dataset: ``"sample"`` (the embedded 5,000/1,000-image CIFAR-10 subset,
        decoded with Pillow), ``"cifar10"`` / ``"cifar100"`` (TFDS, from
        ``data_dir``), or a folder path laid out as
        ``DIR/{train,test}/<class>/<image>`` (decoded with Pillow and
        converted to RGB; classes are the sub-folder names, sorted, and must
        be the same in train and test; all images must have one size).
      data_dir: TFDS data_dir (TFDS datasets only; default: TFDS's default).
      download: let TFDS download and prepare a missing dataset.

    Raises:
      DataError (a ValueError) with a one-line message when the data is
      missing or unusable.
    """
    source = sources.resolve(dataset)
    if source.kind == "sample":
        return _load_sample()
    if source.kind == "folder":
        return _load_folder(source.path, source.name)
    if source.name not in C.TFDS_IN_MEMORY:
        raise DataError(
            f"{source.name} does not fit in memory; use "
            "make_datasets() (tf.data) for it, or one of "
            f"{', '.join((C.SAMPLE,) + C.TFDS_IN_MEMORY)} / a folder here"
        )
    return _load_tfds(source.name, data_dir, download)


# One fixed split for every run, whatever its --seed, so that the runs of a
# study are compared on the same held-out images.
_VALIDATION_SPLIT_SEED = 0x56414C  # "VAL"


def hold_out_validation(arrays: ArraySplits, size: int):
    """``(kept, x_validation, y_validation)``: ``size`` training images held out.

    The held-out images are a random subset drawn with a fixed seed (the
    same for every run; folders are read class by class, so "the last N"
    would be a few classes). ``kept`` is ``arrays`` without them, test split
    unchanged, both in their original order.
    """
    n = arrays.num_train
    with as_data_errors():
        checks.check_int("validation_size", size, 1, n - 1)
    order = np.random.default_rng(_VALIDATION_SPLIT_SEED).permutation(n)
    held, kept = np.sort(order[:size]), np.sort(order[size:])
    kept_splits = ArraySplits(
        x_train=arrays.x_train[kept],
        y_train=arrays.y_train[kept],
        x_test=arrays.x_test,
        y_test=arrays.y_test,
        num_classes=arrays.num_classes,
        class_names=arrays.class_names,
        image_shape=arrays.image_shape,
    )
    return kept_splits, arrays.x_train[held], arrays.y_train[held]


def preprocessing(source, arrays: ArraySplits):
    """`(mean, std, pad)` for CIFAR-style data: the dataset's standard
    per-channel statistics, or for a folder those of its training images and
    a padding of an eighth of the image side (4 pixels at 32x32)."""
    if source.kind == "folder":
        x = arrays.x_train.reshape(-1, arrays.image_shape[-1]).astype(np.float64) / 255.0
        mean, std = tuple(x.mean(0)), tuple(np.maximum(x.std(0), 1e-3))
        return mean, std, max(1, round(min(arrays.image_shape[:2]) / 8))
    mean, std = C.NORMALIZATION[source.name]
    return mean, std, C.CIFAR_PAD
