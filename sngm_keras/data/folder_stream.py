"""Image folders streamed from their files with tf.data: images of any sizes
and modes, and folders too large for memory (ImageNet as class folders).

`stream_plan` decides: a folder whose images all have one size and fit in
memory is read into memory as it always was (pad-crop-flip at its own size,
`sngm_keras.data.in_memory`) unless streaming is asked for; any other is
streamed at ``image_size``: each file read and decoded in parallel
(``AUTOTUNE``), with ImageNet's training augmentation (a random-resized crop,
cut while decoding for JPEGs, resized to ``image_size``, then a flip) or its
evaluation view (`sngm_keras.data.crops`), normalized with ImageNet's
statistics (a stream is never read whole to measure its own). Grayscale,
palette, CMYK and RGBA images come out RGB (TensorFlow's decoders with three
channels; the alpha channel is dropped, as Pillow's ``convert("RGB")`` does).

Determinism, as for the in-memory datasets: epoch e's order is a stateless
permutation of the file list keyed by (seed, e), and each example's crop
and flip come from that key folded with its position in the epoch, so epoch
e depends only on (seed, e) and a resume at batch k sees the batches of a
run never stopped. ``share=(p, P)`` reads only process p's rows of every
batch (sharding by file: the rows ``p * b / P .. (p + 1) * b / P`` of a batch
of b), and ``replica_batches=L`` yields each share as L consecutive
per-replica batches, what `tf.distribute`'s
``distribute_datasets_from_function`` hands to a worker's L replicas.
"""

from __future__ import annotations

import os

import numpy as np

from . import constants as C
from . import crops
from .errors import DataError
from .folder_listing import list_folder
from .info import DatasetInfo, batches, check_batch, check_start_batch, examples_per_epoch
from .tf_setup import epoch_key, import_tf

# A folder is read into memory when its decoded images take at most this
# part of the machine's memory (the tf.data feed holds a second copy).
MEMORY_PART = 0.25


def _memory_bytes():
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 8 * 2**30


def stream_plan(source, *, image_size, stream, default_image_size, skip_bad_images):
    """``(listing, image_size)`` when the folder of `source` is streamed, or
    None when it is read into memory as it is. Raises `DataError`."""
    listing = list_folder(source.path, source.name, bool(skip_bad_images))
    uniform = listing.uniform_size()
    native = uniform is not None and (image_size is None or uniform == (image_size, image_size))
    fits = listing.decoded_bytes() <= MEMORY_PART * _memory_bytes()
    if not stream and native and fits and not listing.skipped:
        return None
    if image_size is None:
        square = uniform is not None and uniform[0] == uniform[1]
        image_size = uniform[0] if square else default_image_size
    if image_size is None:
        raise DataError(
            f"images in {listing.shown}/train have different sizes ({listing.size_range()}); give image_size "
            "(--image_size) to stream them as random-resized crops of that size (224 for ImageNet networks)"
        )
    for split in (listing.train, listing.test):
        odd = split.not_streamable()
        if odd:
            raise DataError(
                f"{len(odd):,} image(s) in {listing.shown} are in a format TensorFlow's decoders do not read, "
                f"e.g. {odd[0]}; convert them to JPEG or PNG"
            )
    return listing, int(image_size)


def streamed_datasets(
    listing,
    *,
    image_size,
    batch_size,
    eval_batch_size,
    augment,
    seed,
    start_epoch,
    num_epochs,
    epoch_multiple=None,
    start_batch=0,
    share=(0, 1),
    replica_batches=1,
):
    """``(train_ds, test_ds, info)`` of a listed folder (see the module
    docstring and `sngm_keras.data.make_datasets`)."""
    tf = import_tf()
    train, test = listing.train, listing.test
    n = len(train)
    check_batch(listing.shown, batch_size, n)
    used = examples_per_epoch(n, batch_size, epoch_multiple)
    steps = batches(used, batch_size)
    check_start_batch(start_batch, steps)
    index, count = share
    parts = count * replica_batches
    if (epoch_multiple or batch_size) % parts:
        raise DataError(
            f"batches of {epoch_multiple or batch_size} examples do not split into {parts} equal parts "
            f"({count} process(es) x {replica_batches} replica(s))"
        )
    whole_batches, last = divmod(used, batch_size)
    statistics = C.NORMALIZATION[C.IMAGENET]
    normalize = crops.normalizer(tf, *statistics, image_size)
    with tf.device("/CPU:0"):
        paths, labels = tf.constant(train.paths), tf.constant(train.labels)
        shapes = tf.constant(np.concatenate([train.sizes, np.full((n, 1), 3, np.int32)], axis=1))
        jpeg = tf.constant(train.jpeg)
        # Constants of the image's shape: a per-channel broadcast runs at a
        # third of the speed of these element-wise ops; applied to each image
        # while it is in cache, faster than to the batch (about 8%).
        scale, offset = (tf.tile(v, [image_size * image_size]) for v in crops.scale_and_offset(tf, *statistics))
        scale, offset = (tf.reshape(v, [image_size, image_size, 3]) for v in (scale, offset))
    decode = decoder(tf, train.jpeg)

    def train_example(path, label, shape, is_jpeg, key):
        """A normalized image of ``image_size`` and its label."""
        data = tf.io.read_file(path)
        if not augment:
            image = crops.eval_crop(tf, decode(data, is_jpeg), image_size)
            return tf.ensure_shape(image * scale + offset, [image_size, image_size, 3]), label
        crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        window = crops.crop_window(tf, shape, crop_key)
        image = decode(data, is_jpeg, window)
        # Flipped as uint8, resized from it (no float copy of the crop).
        flip = tf.random.stateless_uniform([], flip_key) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
        return tf.image.resize(image, [image_size, image_size]) * scale + offset, label

    def shared(rows, size):
        """This share's rows of consecutive batches of `size` (rows
        ``index * size / count ..`` of each)."""
        return tf.reshape(tf.reshape(rows, [-1, count, size // count])[:, index], [-1])

    def epoch_rows(epoch, skip):
        """The rows this share reads, from batch `skip` on (a resume: the
        batches before are not read): each one's file (path, label, shape,
        whether JPEG) and its crop's key, the epoch's key folded with the
        row's position in the epoch (`stateless_fold_in`, computed for the
        whole epoch at once: its first half is the epoch's, the second the
        position)."""
        perm_key, crop_key = tf.unstack(tf.random.experimental.stateless_split(epoch_key(tf, seed, epoch), 2))
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int32), seed=perm_key)[:used]
        positions = tf.range(used, dtype=tf.int64)
        rows = shared(positions[: whole_batches * batch_size], batch_size)
        if last:
            rows = tf.concat([rows, shared(positions[whole_batches * batch_size :], last)], 0)
        rows = rows[skip * batch_size // count :]
        files = tf.gather(order, rows)
        epoch_part = tf.random.experimental.stateless_fold_in(crop_key, tf.constant(0, tf.int64))[0]
        keys = tf.stack([tf.fill(tf.shape(rows), epoch_part), rows], axis=1)
        columns = (paths, labels, shapes, jpeg)
        return tf.data.Dataset.from_tensor_slices(tuple(tf.gather(c, files) for c in columns) + (keys,))

    def epochs(first, end, skip):
        """Epochs ``first .. end - 1`` from batch `skip` of the first, in
        per-replica batches. The examples are read outside the epochs'
        flat_map: tf.data runs a map nested in one at half the speed."""
        rows = tf.data.Dataset.range(first, end).flat_map(lambda epoch: epoch_rows(epoch, skip))
        if not last:  # whole batches keep a static batch dimension
            ds = rows.map(train_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            return ds.batch(batch_size // parts, drop_remainder=True)
        # An epoch ending in a smaller batch: each per-replica batch is a
        # window of its own size, keyed by its number in the stream, so that
        # every image is copied into its batch once (`rebatch` copies again).
        sizes = [batch_size // parts] * (whole_batches - skip) * replica_batches + [last // parts] * replica_batches
        window_sizes = tf.constant(sizes, tf.int64)
        whole_rows = (whole_batches - skip) * batch_size // count  # rows in the epoch's whole batches

        def epoch_windows(epoch):
            row = tf.range(whole_rows + last // count, dtype=tf.int64)
            in_whole = row // (batch_size // parts)
            in_last = (whole_batches - skip) * replica_batches + (row - whole_rows) // (last // parts)
            return tf.data.Dataset.from_tensor_slices(
                epoch * len(sizes) + tf.where(row < whole_rows, in_whole, in_last)
            )

        windows = tf.data.Dataset.range(first, end).flat_map(epoch_windows)
        ds = tf.data.Dataset.zip(rows, windows).map(
            lambda row, window: train_example(*row) + (window,),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

        def size(window):
            return tf.gather(window_sizes, window % len(sizes))

        ds = ds.group_by_window(
            key_func=lambda image, label, window: window,
            reduce_func=lambda window, examples: examples.batch(size(window)),
            window_size_func=size,
        )
        return ds.map(lambda images, labels, _: (images, labels))

    train_ds = epochs(start_epoch, start_epoch + 1, start_batch) if start_batch else None
    rest = epochs(start_epoch + bool(start_batch), num_epochs, 0)
    if train_ds is None or start_epoch + 1 < num_epochs:
        train_ds = rest if train_ds is None else train_ds.concatenate(rest)
    train_ds = train_ds.apply(
        tf.data.experimental.assert_cardinality(((num_epochs - start_epoch) * steps - start_batch) * replica_batches)
    ).prefetch(tf.data.AUTOTUNE)
    test_ds = eval_files(tf, test, normalize, image_size, eval_batch_size, decoder(tf, test.jpeg))
    info = DatasetInfo(
        name=listing.shown,
        num_classes=len(listing.class_names),
        image_shape=(image_size, image_size, 3),
        num_train=n,
        num_test=len(test),
        class_names=listing.class_names,
        streamed=True,
    )
    options = tf.data.Options()
    options.deterministic = True
    return train_ds.with_options(options), test_ds.with_options(options), info


def decode_other(data):
    """PNG, GIF (its first frame), BMP or WebP bytes as RGB uint8."""
    tf = import_tf()
    return tf.ensure_shape(tf.io.decode_image(data, channels=3, expand_animations=False), [None, None, 3])


def decoder(tf, is_jpeg):
    """``decode(data, is_jpeg, window=None)``: RGB uint8 of an image's bytes,
    cut to ``window`` (``[top, left, height, width]``) where given, while
    decoding for a JPEG. Decided per image only for a folder of JPEGs and
    others (`is_jpeg`: the folder's per-file flags)."""

    def jpeg(data, window):
        if window is None:
            return tf.io.decode_jpeg(data, channels=3)
        return tf.ensure_shape(tf.io.decode_and_crop_jpeg(data, window, channels=3), [None, None, 3])

    def other(data, window):
        image = decode_other(data)
        if window is None:
            return image
        top, left, height, width = tf.unstack(window)
        return image[top : top + height, left : left + width]

    def decode(data, is_jpeg_file, window=None):
        if is_jpeg.all():
            return jpeg(data, window)
        if not is_jpeg.any():
            return other(data, window)
        return tf.cond(is_jpeg_file, lambda: jpeg(data, window), lambda: other(data, window))

    return decode


def eval_files(tf, files, normalize, image_size, batch_size, decode):
    """The evaluation view of `files` in order, batches of `batch_size`."""
    with tf.device("/CPU:0"):
        paths, labels, jpeg = tf.constant(files.paths), tf.constant(files.labels), tf.constant(files.jpeg)

    def example(i):
        image = decode(tf.io.read_file(paths[i]), jpeg[i])
        return normalize(crops.eval_crop(tf, image, image_size), resize=False), labels[i]

    ds = tf.data.Dataset.range(len(files)).map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def streamed_folder(source, *, stream, skip_bad_images, default_image_size, image_size, validation_size, **args):
    """`streamed_datasets` of the folder of `source` when `stream_plan`
    streams it, else None (read it into memory); other datasets: None."""
    if source.kind != "folder":
        if stream or skip_bad_images:
            raise DataError(f"stream and skip_bad_images apply to image folders, not {source.name}")
        return None
    plan = stream_plan(
        source,
        image_size=image_size,
        stream=stream,
        default_image_size=default_image_size,
        skip_bad_images=skip_bad_images,
    )
    if plan is None:
        return None
    if validation_size:
        raise DataError(
            f"validation_size: {source.name} is streamed from its files; holding out training images is "
            "supported for folders read into memory only (images of one size)"
        )
    listing, image_size = plan
    try:
        import_tf()
    except ImportError:
        raise DataError(
            f"{source.name} is streamed from its files (its images differ in size, or streaming was asked for), "
            "which needs TensorFlow's tf.data: pip install tensorflow-cpu (a folder of images of one size needs none)"
        ) from None
    return streamed_datasets(listing, image_size=image_size, **args)
