#!/usr/bin/env python3
"""Build the embedded CIFAR-10 sample, ``sngm_keras/sample_data/cifar10_sample.npz``.

Takes a class-balanced, seeded random subset of the CIFAR-10 JPEG archive
(``{train,test}/<class>/NNNN.jpg``, the official splits): by default 500
train and 100 test images per class (5,000 + 1,000).  The JPEG bytes are
stored exactly as they are in the archive (no re-encoding).

Usage:
    python tools/make_sample.py --source=cifar10_jpeg.tar.xz --out=sngm_keras/sample_data

``--source`` may also be an already-extracted folder with train/ and test/.

File layout (``numpy.load``)::

    class_names          <U..  (C,)     sorted class folder names
    train_bytes          uint8 (B,)     concatenated JPEG files
    train_offsets        int64 (N+1,)   image i is bytes[offsets[i]:offsets[i+1]]
    train_labels         int32 (N,)     index into class_names
    train_files          <U..  (N,)     source member name, e.g. train/cat/0042.jpg
    test_bytes, test_offsets, test_labels, test_files   (same, test split)
    seed                 int64 ()       the --seed used
"""

import argparse
import os
import sys
import tarfile
from pathlib import Path

import numpy as np

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg")
MAX_BYTES = 3 * 1024 * 1024


def _read_tar(path: Path):
    """Returns {split: {class: {filename: bytes}}} from a .tar(.xz/.gz) archive."""
    files = {s: {} for s in SPLITS}
    with tarfile.open(path) as tar:
        for member in tar:  # streaming: one pass over the compressed archive
            if not member.isfile():
                continue
            parts = Path(member.name).parts
            # Accept both "train/cat/0001.jpg" and "cifar10/train/cat/0001.jpg".
            split_at = [i for i, p in enumerate(parts) if p in SPLITS]
            parts = parts[split_at[0] :] if split_at else ()
            if len(parts) != 3 or not parts[2].lower().endswith(IMAGE_SUFFIXES):
                continue
            split, cls, name = parts
            files[split].setdefault(cls, {})[name] = tar.extractfile(member).read()
    return files


def _read_dir(root: Path):
    files = {s: {} for s in SPLITS}
    for split in SPLITS:
        for cls_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            files[split][cls_dir.name] = {
                f.name: f.read_bytes() for f in cls_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES
            }
    return files


def build(files, per_class, seed):
    """Selects `per_class[split]` images per class; returns the npz arrays."""
    class_names = sorted(files["train"])
    if sorted(files["test"]) != class_names:
        raise SystemExit("train and test have different class folders")
    rng = np.random.default_rng(seed)
    out = {"class_names": np.array(class_names), "seed": np.int64(seed)}
    for split in SPLITS:
        chosen = []  # (label, member name, bytes)
        for label, cls in enumerate(class_names):
            names = sorted(files[split][cls])
            if len(names) < per_class[split]:
                raise SystemExit(f"{split}/{cls} has only {len(names)} images, need {per_class[split]}")
            for i in np.sort(rng.choice(len(names), per_class[split], replace=False)):
                chosen.append((label, f"{split}/{cls}/{names[i]}", files[split][cls][names[i]]))
        order = rng.permutation(len(chosen))  # store shuffled, not class-sorted
        chosen = [chosen[i] for i in order]
        blobs = [b for _, _, b in chosen]
        out[f"{split}_bytes"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        out[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
        out[f"{split}_labels"] = np.array([label for label, _, _ in chosen], dtype=np.int32)
        out[f"{split}_files"] = np.array([n for _, n, _ in chosen])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="cifar10_jpeg.tar.xz, or a folder with train/ and test/")
    parser.add_argument("--out", default="sngm_keras/sample_data", help="output folder (default: %(default)s)")
    parser.add_argument("--train_per_class", type=int, default=500)
    parser.add_argument("--test_per_class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="cifar10_sample.npz")
    args = parser.parse_args(argv)

    source = Path(args.source)
    if not source.exists():
        raise SystemExit(f"--source {source} does not exist")
    files = _read_dir(source) if source.is_dir() else _read_tar(source)
    arrays = build(files, {"train": args.train_per_class, "test": args.test_per_class}, args.seed)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / args.name
    np.savez_compressed(path, **arrays)
    size = os.path.getsize(path)
    print(
        f"wrote {path}: {len(arrays['train_labels'])} train + "
        f"{len(arrays['test_labels'])} test images, "
        f"{len(arrays['class_names'])} classes, {size / 1e6:.2f} MB"
    )
    if size > MAX_BYTES:
        print(f"warning: {path} is larger than {MAX_BYTES} bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
