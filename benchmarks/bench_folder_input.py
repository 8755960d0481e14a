"""The training input of a streamed image folder alone (read, decode,
random-resized crop, flip, normalize, batch) against
`keras.utils.image_dataset_from_directory` at the same output size (read,
decode, resize, batch; no crop, no flip), side by side in one process.

Without --folder it writes --images JPEGs of ImageNet-like sizes (sides
from --min_side to --max_side, smooth content, quality 90) into a temporary
folder of two classes. Each round iterates one epoch of each input, in a
new order every round, with tf.data's threads limited to one (and one
thread for each op); reported: the median over --repeats rounds of the
images per second of CPU time the process used (the rate of one core,
which a training run beside the benchmark does not change, as it changes
the wall-clock rate, also reported), the median and quartiles of the
per-round ratios of the two one-thread rates, and the cores that one
NVIDIA H100's ResNet-50 training step (about 3,000 images/s, --gpu_rate)
would need at that rate. --every_core adds the rates with tf.data's
defaults (all cores). --stages adds what each step of the work costs, in CPU
microseconds per image, one thread, built from the library's own pieces
(`crops.crop_window`, `folder_stream.decoder`): decoding (the whole image,
or only the crop), the resize, the flip and the normalization, so that the
two inputs can be compared for the same work.

    python -m benchmarks.bench_folder_input --repeats=5 --output=bench_folder_input.json
"""

import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags

from apps._cli import fail, run

FLAGS = flags.FLAGS
flags.DEFINE_string("folder", None, "A folder DIR/{train,test}/<class>/<image> (default: generated JPEGs).")
flags.DEFINE_integer(
    "images",
    2000,
    "Training images generated without --folder: an epoch each round, long enough that an input's fixed "
    "start per epoch (tens of milliseconds) weighs little, as in a real epoch.",
    lower_bound=8,
)
flags.DEFINE_integer("min_side", 200, "Smallest side of a generated image.", lower_bound=16)
flags.DEFINE_integer("max_side", 500, "Largest side of a generated image.", lower_bound=16)
flags.DEFINE_integer("image_size", 224, "Output side of both inputs.", lower_bound=8)
flags.DEFINE_integer("batch_size", 32, "Batch of both inputs.", lower_bound=1)
flags.DEFINE_integer("repeats", 5, "Timed rounds (medians reported).", lower_bound=1)
flags.DEFINE_bool("every_core", False, "Also time both inputs with tf.data's default threads.")
flags.DEFINE_bool("stages", False, "Also time the steps of the work one by one (CPU microseconds per image).")
flags.DEFINE_float("gpu_rate", 3000.0, "Images/s of the accelerator's training step to feed.", lower_bound=1.0)
flags.DEFINE_string("output", "bench_folder_input.json", "JSON results.")


def write_jpegs(root, count, min_side, max_side, seed=0):
    """`count` training JPEGs (and a few test ones) of random sizes, smooth
    like photographs rather than noise, which JPEG does not compress."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, number in (("train", count), ("test", 4)):
        for i in range(number):
            folder = os.path.join(root, split, f"class{i % 2}")
            os.makedirs(folder, exist_ok=True)
            width, height = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
            coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
            detail = rng.normal(0, 8, (height, width, 3))
            pixels = np.clip(np.asarray(image, np.float64) + detail, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)


def epoch_rates(dataset):
    """Images per second of CPU time and of wall-clock time of one pass over `dataset`."""
    cpu, wall, count = time.process_time(), time.perf_counter(), 0
    for _, labels in dataset:
        count += int(labels.shape[0])
    return count / (time.process_time() - cpu), count / (time.perf_counter() - wall)


def stage_costs(root, image_size, batch_size, repeats, one_thread):
    """CPU microseconds per image of cumulative steps of the training input
    on the images of ``root/train``, one thread, medians over `repeats`."""
    from pathlib import Path

    import numpy as np
    import tensorflow as tf

    from sngm_keras.data import constants, crops
    from sngm_keras.data.folder_listing import list_folder
    from sngm_keras.data.folder_stream import decoder

    files = list_folder(Path(root), "bench").train
    paths, is_jpeg = tf.constant(files.paths), tf.constant(files.jpeg)
    shapes = tf.constant(np.concatenate([files.sizes, np.full((len(files), 1), 3, np.int32)], axis=1))
    decode, size = decoder(tf, files.jpeg), [image_size, image_size]
    scale, offset = crops.scale_and_offset(tf, *constants.NORMALIZATION[constants.IMAGENET])
    scale, offset = (tf.reshape(tf.tile(v, [image_size * image_size]), size + [3]) for v in (scale, offset))

    def cropped(i, flip=False):
        crop_key, flip_key = tf.unstack(
            tf.random.experimental.stateless_split(tf.stack([tf.constant(7, tf.int64), i]), 2)
        )
        image = decode(tf.io.read_file(paths[i]), is_jpeg[i], crops.crop_window(tf, shapes[i], crop_key))
        if flip:
            image = tf.cond(
                tf.random.stateless_uniform([], flip_key) < 0.5, lambda: tf.reverse(image, [1]), lambda: image
            )
        return image

    stages = {
        "decode the whole image": lambda i: decode(tf.io.read_file(paths[i]), is_jpeg[i])[:1, :1],
        "decode the whole image, resize (Keras' input)": lambda i: tf.image.resize(
            decode(tf.io.read_file(paths[i]), is_jpeg[i]), size
        ),
        "decode the crop": lambda i: cropped(i)[:1, :1],
        "decode the crop, resize": lambda i: tf.image.resize(cropped(i), size),
        "decode the crop, flip, resize": lambda i: tf.image.resize(cropped(i, flip=True), size),
        "decode the crop, flip, resize, normalize (the streamed input)": lambda i: (
            tf.image.resize(cropped(i, flip=True), size) * scale + offset
        ),
    }

    def cost(fn):
        ds = tf.data.Dataset.range(len(files)).map(fn, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
        cpu = time.process_time()
        for _ in one_thread(ds):
            pass
        return 1e6 * (time.process_time() - cpu) / len(files)

    for fn in stages.values():  # warm up
        cost(fn)
    costs = {name: [] for name in stages}
    order = random.Random(1)
    for _ in range(repeats):
        for name in order.sample(list(stages), len(stages)):
            costs[name].append(cost(stages[name]))
    return {name: statistics.median(values) for name, values in costs.items()}


def main():
    if FLAGS.min_side > FLAGS.max_side:
        fail(f"--min_side={FLAGS.min_side} is larger than --max_side={FLAGS.max_side}")
    if FLAGS.folder is not None and not os.path.isdir(os.path.join(FLAGS.folder, "train")):
        fail(f"--folder: {FLAGS.folder} has no train/ folder of class folders")
    import keras
    import tensorflow as tf

    from sngm_keras.data import make_datasets

    made = FLAGS.folder is None
    root = tempfile.mkdtemp(prefix="bench-folder-input-") if made else FLAGS.folder
    try:
        if made:
            write_jpegs(root, FLAGS.images, FLAGS.min_side, FLAGS.max_side)
        size = FLAGS.image_size

        def with_threads(dataset, threads):
            options = tf.data.Options()
            if threads:
                options.threading.private_threadpool_size = threads
                options.threading.max_intra_op_parallelism = 1
            return dataset.with_options(options)

        def ours(threads, epoch):
            train = make_datasets(
                root, batch_size=FLAGS.batch_size, image_size=size, stream=True, seed=epoch, num_epochs=1
            )[0]
            return with_threads(train, threads)

        def keras_input(threads, epoch):
            train = keras.utils.image_dataset_from_directory(
                os.path.join(root, "train"),
                image_size=(size, size),
                batch_size=FLAGS.batch_size,
                seed=epoch,
                verbose=False,
            )
            return with_threads(train.prefetch(tf.data.AUTOTUNE), threads)

        inputs = {
            "streamed folder (crop, flip, normalize)": ours,
            "keras image_dataset_from_directory (resize)": keras_input,
        }
        rates = {(name, threads): [] for name in inputs for threads in ((1, 0) if FLAGS.every_core else (1,))}
        for name, threads in rates:  # warm up: trace, fill the file cache
            epoch_rates(inputs[name](threads, 0))
        order = random.Random(0)
        for round_ in range(FLAGS.repeats):
            for name, threads in order.sample(list(rates), len(rates)):
                rates[(name, threads)].append(epoch_rates(inputs[name](threads, round_ + 1)))
        measured = {}
        for (name, threads), values in rates.items():
            label = f"{name}, {'one thread' if threads else 'every core'}"
            measured[label] = {
                "images_per_cpu_second": statistics.median(cpu for cpu, _ in values),
                "images_per_second": statistics.median(wall for _, wall in values),
            }
        ours_rate = statistics.median(cpu for cpu, _ in rates[(next(iter(inputs)), 1)])
        ratios = [ours[0] / theirs[0] for ours, theirs in zip(*(rates[(name, 1)] for name in inputs))]
        stages = (
            stage_costs(root, size, FLAGS.batch_size, FLAGS.repeats, lambda ds: with_threads(ds, 1))
            if FLAGS.stages
            else None
        )
        results = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "folder": "generated" if made else FLAGS.folder,
            "images": FLAGS.images if made else None,
            "sides": [FLAGS.min_side, FLAGS.max_side] if made else None,
            "image_size": size,
            "batch_size": FLAGS.batch_size,
            "repeats": FLAGS.repeats,
            "rates": measured,
            "ratio_per_cpu_second": statistics.median(ratios),
            "ratio_quartiles": statistics.quantiles(ratios, n=4)[::2] if len(ratios) > 1 else ratios * 2,
            "cores_for_gpu_rate": FLAGS.gpu_rate / ours_rate,
            "stages_cpu_us_per_image": stages,
        }
        for label, value in measured.items():
            print(
                f"{label}: {value['images_per_cpu_second']:.0f} images per CPU second, "
                f"{value['images_per_second']:.0f} images/s"
            )
        for name, microseconds in (stages or {}).items():
            print(f"{name}: {microseconds:.0f} CPU microseconds per image")
        print(
            f"streamed / keras per CPU second: {results['ratio_per_cpu_second']:.3f} (quartiles "
            f"{results['ratio_quartiles'][0]:.3f}-{results['ratio_quartiles'][1]:.3f}); {FLAGS.gpu_rate:.0f} images/s "
            f"would need {results['cores_for_gpu_rate']:.1f} cores at the streamed rate"
        )
        with open(FLAGS.output, "w") as file:
            json.dump(results, file, indent=2)
    finally:
        if made:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    run(main)
