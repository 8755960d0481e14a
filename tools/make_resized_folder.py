"""An image folder of mixed sizes from a dataset of one size: every image
resized (bicubic) to a random width and height, each drawn uniformly from
--min_side to --max_side, the same split, classes and order, as JPEG
(quality 95) or PNG. It checks that the streamed folders learn: CIFAR-10 at
sizes from 32 to 96 pixels trains like CIFAR-10 itself (README, *Data*).

    python -m apps.import_data --source=cifar-10-python.tar.gz --output_dir=cifar10_png
    python -m tools.make_resized_folder --source=cifar10_png --output_dir=cifar10_mixed
    python -m apps.train --dataset=cifar10_mixed --image_size=64 --model=resnet18 ...

--source is anything `sngm_keras.data.load_arrays` reads: a folder
DIR/{train,test}/<class>/<image> of one size, "sample", or "cifar10" /
"cifar100" with --data_dir (TFDS).
"""

import os

import numpy as np
from absl import flags

from apps._cli import fail, run

FLAGS = flags.FLAGS
flags.DEFINE_string("source", None, "A folder DIR/{train,test}/<class>/<image>, sample, cifar10 or cifar100.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir, for --source=cifar10 or cifar100.")
flags.DEFINE_string("output_dir", None, "The new folder DIR/{train,test}/<class>/<image> to write.")
flags.DEFINE_integer("min_side", 32, "Smallest width or height.", lower_bound=1)
flags.DEFINE_integer("max_side", 96, "Largest width or height.", lower_bound=1)
flags.DEFINE_enum("format", "jpeg", ["jpeg", "png"], "Image format written.")
flags.DEFINE_integer("seed", 0, "Seed of the sizes.", lower_bound=0)


def write_resized(arrays, out_dir, min_side, max_side, seed=0, image_format="jpeg"):
    """Writes `arrays` (an `ArraySplits`) as ``out_dir/{train,test}/<class>/<n>``,
    each image resized to a random size; returns {split: [(width, height), ...]}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    suffix = ".jpg" if image_format == "jpeg" else ".png"
    sizes = {}
    for split in ("train", "test"):
        x, y = getattr(arrays, f"x_{split}"), getattr(arrays, f"y_{split}")
        for name in arrays.class_names:
            os.makedirs(os.path.join(out_dir, split, name), exist_ok=True)
        drawn = rng.integers(min_side, max_side + 1, size=(len(x), 2))
        for i, (image, label, (width, height)) in enumerate(zip(x, y, drawn)):
            resized = Image.fromarray(image).resize((int(width), int(height)), Image.BICUBIC)
            path = os.path.join(out_dir, split, arrays.class_names[label], f"{i:05d}{suffix}")
            resized.save(path, quality=95) if image_format == "jpeg" else resized.save(path)
        sizes[split] = [tuple(int(v) for v in s) for s in drawn]
    return sizes


def main():
    if not FLAGS.source or not FLAGS.output_dir:
        fail("--source and --output_dir: both required")
    if FLAGS.min_side > FLAGS.max_side:
        fail(f"--min_side={FLAGS.min_side} is larger than --max_side={FLAGS.max_side}")
    out_dir = os.path.expanduser(FLAGS.output_dir)
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        fail(f"--output_dir: {FLAGS.output_dir} already exists and is not empty; pick a new folder")
    from sngm_keras.data import DataError, load_arrays

    try:
        arrays = load_arrays(FLAGS.source, data_dir=FLAGS.data_dir)
    except DataError as error:
        fail(str(error))
    sizes = write_resized(arrays, out_dir, FLAGS.min_side, FLAGS.max_side, FLAGS.seed, FLAGS.format)
    print(
        f"wrote {len(sizes['train']):,} training and {len(sizes['test']):,} test images of "
        f"{FLAGS.min_side} to {FLAGS.max_side} pixels a side into {FLAGS.output_dir}"
    )


if __name__ == "__main__":
    run(main)
