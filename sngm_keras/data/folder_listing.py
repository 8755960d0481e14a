"""What an image folder holds, listed once before anything is decoded:
``DIR/{train,test}/<class>/<image>`` (``val/`` in place of ``test/``, as
ImageNet's folders are usually named), each image's size and format read
from its header, and its end checked for the end marker that TensorFlow's
decoders need (a copy cut short loses it).

The listing decides how the folder is read (`sngm_keras.data.folder_input`)
and checks it the way a user needs it checked, in one line each: a class
folder missing from a split or empty, ImageNet's validation folder as
distributed (flat), a file that is not an image TensorFlow decodes or was
cut short. Files that are not images by their suffix (a README, .DS_Store)
are counted and left out. Needs Pillow and NumPy only.
"""

from __future__ import annotations

import functools
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import progress
from .arrays import IMAGE_SUFFIXES, _workers
from .errors import DataError
from .sources import test_split_name

#: Pillow's names of the formats TensorFlow's decoders read (MPO: a camera's JPEG).
STREAMED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP")
JPEG_FORMATS = ("JPEG", "MPO")
_NAMED = 3  # bad files named in a message
_CHUNK = 256  # files probed by one task


@dataclass(frozen=True)
class SplitFiles:
    """One split's images in listing order (class by class, names sorted)."""

    paths: tuple  # str
    labels: np.ndarray  # int32 class indices
    sizes: np.ndarray  # int32 [n, 2]: height, width
    formats: tuple  # Pillow's format names

    @property
    def jpeg(self):
        """Whether each is a JPEG (cropped while it is decoded)."""
        return np.asarray([f in JPEG_FORMATS for f in self.formats], bool)

    def not_streamable(self):
        """The files TensorFlow's decoders cannot read (TIFF, PPM, ...)."""
        return [p for p, f in zip(self.paths, self.formats) if f not in STREAMED_FORMATS]

    def __len__(self):
        return len(self.paths)


@dataclass(frozen=True)
class FolderListing:
    shown: str  # the folder as the user gave it
    class_names: tuple
    train: SplitFiles
    test: SplitFiles
    ignored: int  # files that are not images by their suffix
    skipped: tuple  # files left out because they do not decode (skip_bad_images)

    def uniform_size(self):
        """``(height, width)`` when every image has it, else None."""
        sizes = np.concatenate([self.train.sizes, self.test.sizes])
        return tuple(int(v) for v in sizes[0]) if (sizes == sizes[0]).all() else None

    def size_range(self, split="train"):
        """Text of two different sizes of a split, e.g. ``276x150 and 175x299``."""
        sizes = sorted({(int(h), int(w)) for h, w in getattr(self, split).sizes})
        return f"{sizes[0][1]}x{sizes[0][0]} and {sizes[-1][1]}x{sizes[-1][0]}"

    def decoded_bytes(self):
        """Bytes of every image decoded to 8-bit RGB."""
        return int(
            sum(int((s[:, 0].astype(np.int64) * s[:, 1]).sum()) * 3 for s in (self.train.sizes, self.test.sizes))
        )


_HEAD = 65536  # bytes read to find a JPEG's or PNG's size
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_markers(data: bytes):
    """(marker, offset) of a JPEG's markers from its start to its first scan
    (SOS, 0xDA), whose entropy-coded data has no lengths to walk by."""
    i = 2
    while i + 3 < len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        yield marker, i
        if marker == 0xDA:
            return
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            i += 2
        else:
            i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]


def _header_size(head: bytes):
    """(height, width, format) of a PNG or a JPEG from its first bytes, else
    None: four times faster than Pillow, which reads the others."""
    if head[:8] == _PNG and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return (height, width, "PNG") if height and width else None
    if head[:2] != b"\xff\xd8":
        return None
    for marker, i in _jpeg_markers(head):
        if marker in _JPEG_FRAMES and i + 9 <= len(head):
            height, width = struct.unpack(">HH", head[i + 5 : i + 9])
            return (height, width, "JPEG") if height and width else None
    return None


_TAIL = 64  # bytes read at a file's end to find its end marker
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}  # JPEG's EOI; PNG's IEND chunk and its CRC


def _ends_whole(file, head, fmt):
    """Whether a JPEG or PNG holds its end marker, without which TensorFlow's
    decoders fail (Pillow decodes such files). Looked for at the file's end;
    where data follows it (a camera's trailer), in the whole file: for a
    JPEG, after its first scan, since an EXIF thumbnail has an end of its
    own."""
    end = _END_MARKERS[fmt]
    if len(head) < _HEAD:  # the whole file was read
        tail = head[-_TAIL:]
    else:
        file.seek(0, os.SEEK_END)
        file.seek(max(0, file.tell() - _TAIL))
        tail = file.read()
    if tail.rstrip(b"\x00").endswith(end):
        return True
    file.seek(0)
    data = file.read()
    if fmt == "PNG":
        return end in data
    scan = next((i for marker, i in _jpeg_markers(data) if marker == 0xDA), None)
    return scan is not None and data.find(end, scan) >= 0


def _probe(path: str):
    """(height, width, format) from the header, or why it does not decode."""
    from PIL import Image

    try:
        with open(path, "rb") as file:
            head = file.read(_HEAD)
            found = _header_size(head)
            if not found:  # past the fast path (a header over 64 KiB, GIF, BMP, WebP, ...)
                with Image.open(file) as image:
                    fmt, (width, height) = image.format, image.size
                    if fmt not in JPEG_FORMATS + ("PNG",):
                        image.load()  # no end marker to look for: decoded whole, rare formats in datasets
                found = (height, width, "JPEG" if fmt in JPEG_FORMATS else fmt)
            if found[2] in _END_MARKERS and not _ends_whole(file, head, found[2]):
                return f"{path}: cut short, the {found[2]} data ends before its end marker"
    except Exception as err:
        return f"{path}: {str(err).strip() or type(err).__name__}"
    return found


def _class_dirs(split_dir: Path):
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_classes(root: Path, shown: str, test: str):
    train_classes, test_classes = _class_dirs(root / "train"), _class_dirs(root / test)
    for split, classes in (("train", train_classes), (test, test_classes)):
        loose = [f for f in (root / split).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        if loose and len(loose) >= len(classes):
            hint = ""
            if split != "train":
                hint = (
                    " (ImageNet's validation folder as distributed keeps its labels in a separate file, "
                    "ILSVRC2012_validation_ground_truth.txt or LOC_val_solution.csv)"
                )
            raise DataError(
                f"{shown}/{split} holds {len(loose):,} images directly, not in class folders{hint}; move each "
                f"image into {split}/<class>/, the class folders named as in train/"
            )
    if not train_classes:
        raise DataError(f"{shown}/train has no class sub-folders; lay it out as DIR/{{train,test}}/<class>/<image>")
    for cls in train_classes:
        if cls not in test_classes:
            raise DataError(
                f"class folder {cls} of {shown}/train is missing from {shown}/{test}; give both splits the same "
                "class folders"
            )
    for cls in test_classes:
        if cls not in train_classes:
            raise DataError(f"class folder {cls} of {shown}/{test} is not in {shown}/train; remove it or add it there")
    if len(train_classes) < 2:
        raise DataError(f"{shown} has one class folder ({train_classes[0]}); a classifier needs at least two")
    return tuple(train_classes)


def _is_image_name(name):
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _probe_all(files):
    return [_probe(file) for file in files]


def _split_files(root: Path, shown: str, split: str, class_names):
    files, labels, ignored = [], [], 0
    for label, cls in enumerate(class_names):
        folder = os.path.join(root, split, cls)
        with os.scandir(folder) as entries:  # scandir knows the files without a stat each
            listed = sorted(entry.name for entry in entries if entry.is_file())
        images = [os.path.join(folder, name) for name in listed if _is_image_name(name)]  # pathlib: 10x slower
        ignored += len(listed) - len(images)
        if not images:
            raise DataError(
                f"class folder {shown}/{split}/{cls} holds no images (files ending in {', '.join(IMAGE_SUFFIXES)}); "
                "add images or remove the folder from both splits"
            )
        files += images
        labels += [label] * len(images)
    return files, labels, ignored


@functools.lru_cache(maxsize=4)
def list_folder(root: Path, shown: str, skip_bad_images: bool = False) -> FolderListing:
    """Lists ``root`` (shown as ``shown`` in messages), reading every image's
    header; raises `DataError`. Files that do not decode end the listing with
    one line naming them, or with ``skip_bad_images`` are left out (their
    number and first names in `FolderListing.skipped`). Cached per process:
    every pipeline of a run lists once."""
    test = test_split_name(root)
    class_names = _check_classes(root, shown, test)
    listed = {split: _split_files(root, shown, split, class_names) for split in ("train", test)}
    total = sum(len(files) for files, _, _ in listed.values())
    advance = progress.start(f"listing {shown}: {total:,} images in {len(class_names):,} classes", total)
    splits, bad = {}, []
    with ThreadPoolExecutor(_workers()) as pool:
        for split, (files, labels, _) in listed.items():
            kept = []
            # In chunks: a task per file costs more than reading its header.
            starts = range(0, len(files), _CHUNK)
            for start, probes in zip(starts, pool.map(_probe_all, (files[i : i + _CHUNK] for i in starts))):
                advance(len(probes))
                for file, label, probe in zip(files[start : start + _CHUNK], labels[start : start + _CHUNK], probes):
                    if isinstance(probe, str):
                        bad.append(probe)
                    else:
                        kept.append((file, label, probe))
            splits[split] = SplitFiles(
                paths=tuple(k[0] for k in kept),
                labels=np.asarray([k[1] for k in kept], np.int32),
                sizes=np.asarray([k[2][:2] for k in kept], np.int32).reshape(-1, 2),
                formats=tuple(k[2][2] for k in kept),
            )
    more = f" and {len(bad) - _NAMED:,} more" if len(bad) > _NAMED else ""
    if bad and not skip_bad_images:
        raise DataError(
            f"{len(bad):,} file(s) in {shown} do not decode as images: {'; '.join(bad[:_NAMED])}{more}; remove or "
            "replace them, or pass --skip_bad_images to train without them"
        )
    for split, files in splits.items():
        if not len(files):
            raise DataError(f"no image of {shown}/{split} decodes; check the files")
    ignored = sum(ignored for _, _, ignored in listed.values())
    if ignored:
        progress.note(f"{shown}: {ignored:,} file(s) that are not images (by their names' endings) left out")
    if bad:
        progress.note(f"{shown}: {len(bad):,} file(s) that do not decode left out: {'; '.join(bad[:_NAMED])}{more}")
    return FolderListing(
        shown=shown,
        class_names=class_names,
        train=splits["train"],
        test=splits[test],
        ignored=ignored,
        skipped=tuple(bad),
    )
