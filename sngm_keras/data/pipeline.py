"""tf.data input pipelines for `model.fit`, resumable at any epoch.

TensorFlow is imported lazily, when the pipelines are built.

Determinism: the order and the augmentation of epoch ``e`` depend only on
``(seed, e)`` (and on ``batch_size`` and ``epoch_multiple``, which fix
how many examples each epoch keeps), so a run resumed with
``start_epoch=e`` (and ``start_batch=k``) sees exactly the batches an
uninterrupted run sees from epoch ``e`` (its batch ``k``) on.  In-memory datasets draw a fresh permutation per epoch
with a stateless shuffle seeded by ``(seed, e)``, and crop offsets and
flips per example from stateless random ops keyed by
``(seed, e, position in the epoch)``.  ImageNet: see
`sngm_keras.data.imagenet`.
"""

from __future__ import annotations

import numpy as np

from . import constants as C
from . import sources
from .arrays import ArraySplits
from .errors import DataError
from .in_memory import load_in_memory
from .info import batches, check_start_batch, examples_per_epoch
from .tf_setup import epoch_key, import_tf


def make_tf_datasets(
    dataset,
    *,
    data_dir,
    download,
    batch_size,
    eval_batch_size,
    augment,
    seed,
    start_epoch,
    num_epochs,
    image_size,
    validation_size,
    epoch_multiple=None,
    start_batch=0,
):
    """The tf.data feed of `sngm_keras.data.make_datasets` (see there):
    ImageNet streamed from its files, every other dataset from memory."""
    source = sources.resolve(dataset)
    if source.kind == "tfds" and source.name == C.IMAGENET:
        if validation_size:
            raise DataError(
                f"validation_size: {C.IMAGENET} is streamed from files; holding out training "
                "images is supported for in-memory datasets only"
            )
        from . import imagenet

        return imagenet.make_imagenet_datasets(
            data_dir=data_dir,
            download=download,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            augment=augment,
            seed=seed,
            start_epoch=start_epoch,
            num_epochs=num_epochs,
            image_size=image_size or C.IMAGENET_IMAGE_SIZE,
            epoch_multiple=epoch_multiple,
            start_batch=start_batch,
        )

    data = load_in_memory(
        source,
        dataset,
        data_dir=data_dir,
        download=download,
        image_size=image_size,
        validation_size=validation_size,
        batch_size=batch_size,
    )
    arrays, mean, std, pad = data.arrays, data.mean, data.std, data.pad
    train_ds, test_ds = in_memory_datasets(
        arrays,
        mean=mean,
        std=std,
        pad=pad,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        augment=augment,
        seed=seed,
        start_epoch=start_epoch,
        num_epochs=num_epochs,
        epoch_multiple=epoch_multiple,
        start_batch=start_batch,
    )
    if data.validation is None:
        return train_ds, test_ds, data.info
    return train_ds, test_ds, data.info, eval_dataset(*data.validation, mean, std, eval_batch_size)


def in_memory_datasets(
    arrays: ArraySplits,
    *,
    mean,
    std,
    pad,
    batch_size,
    eval_batch_size,
    augment,
    seed,
    start_epoch,
    num_epochs,
    epoch_multiple=None,
    start_batch=0,
):
    """Train/test pipelines over uint8 arrays held in memory.

    Each epoch: a permutation of the training set from a stateless shuffle
    keyed by (seed, epoch), its first ``examples_per_epoch`` indices cut
    into batches of ``batch_size`` (the last one smaller when
    ``epoch_multiple`` keeps part of a batch); each batch is gathered from
    the in-memory tensor and augmented in one vectorized step (pad, crop at
    per-example random offsets, flip), the offsets and flips of example
    ``i`` of the epoch coming from a stateless uniform draw keyed by
    (seed, epoch) at row ``i``. The first epoch starts at its batch
    ``start_batch``: the batches before it are skipped as indices, never
    gathered or augmented.
    """
    tf = import_tf()
    height, width, channels = arrays.image_shape
    n = arrays.num_train
    used = examples_per_epoch(n, batch_size, epoch_multiple)
    steps = batches(used, batch_size)
    check_start_batch(start_batch, steps)
    whole = used % batch_size == 0
    crop_choices = 2 * pad + 1

    with tf.device("/CPU:0"):
        x_train = tf.constant(arrays.x_train)
        y_train = tf.constant(arrays.y_train, dtype=tf.int32)
        normalize = _normalizer(tf, mean, std)

    def epoch_indices(epoch):
        perm_key, aug_key = tf.unstack(tf.random.experimental.stateless_split(epoch_key(tf, seed, epoch), 2))
        perm = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int32), seed=perm_key)[:used]
        # One uniform draw per example encodes (dy, dx, flip).
        draw = tf.random.stateless_uniform(
            [used], seed=aug_key, minval=0, maxval=2 * crop_choices * crop_choices, dtype=tf.int32
        )
        # Whole batches keep a static batch dimension.
        return tf.data.Dataset.from_tensor_slices((perm, draw)).batch(batch_size, drop_remainder=whole)

    rows = tf.range(height)
    cols = tf.range(width)

    def train_batch(idx, draw):
        images = tf.gather(x_train, idx)
        labels = tf.gather(y_train, idx)
        if augment:
            flip = tf.equal(draw % 2, 1)
            dx = (draw // 2) % crop_choices
            dy = (draw // 2) // crop_choices
            padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
            row_idx = dy[:, None] + rows[None, :]
            col_idx = tf.where(flip[:, None], dx[:, None] + (width - 1 - cols)[None, :], dx[:, None] + cols[None, :])
            images = tf.gather(padded, row_idx, axis=1, batch_dims=1)
            images = tf.gather(images, col_idx, axis=2, batch_dims=1)
        rows_of_batch = batch_size if whole else None
        images = tf.ensure_shape(normalize(images), [rows_of_batch, height, width, channels])
        return images, tf.ensure_shape(labels, [rows_of_batch])

    def indices_from(epoch):
        return epoch_indices(epoch).skip(tf.where(epoch == start_epoch, tf.constant(start_batch, tf.int64), 0))

    train_ds = (
        tf.data.Dataset.range(start_epoch, num_epochs)
        .flat_map(indices_from)
        .map(train_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .apply(tf.data.experimental.assert_cardinality((num_epochs - start_epoch) * steps - start_batch))
        .prefetch(tf.data.AUTOTUNE)
    )

    test_ds = eval_dataset(arrays.x_test, arrays.y_test, mean, std, eval_batch_size)
    return train_ds.with_options(_deterministic(tf)), test_ds


def _normalizer(tf, mean, std):
    """uint8 images -> float32 ``(x / 255 - mean) / std`` per channel."""
    scale = tf.constant([1.0 / (255.0 * s) for s in std], tf.float32)
    offset = tf.constant([-m / s for m, s in zip(mean, std)], tf.float32)
    return lambda images: tf.cast(images, tf.float32) * scale + offset


def _deterministic(tf):
    options = tf.data.Options()
    options.deterministic = True
    return options


def eval_dataset(images, labels, mean, std, batch_size):
    """Normalized ``(images, labels)`` in order, batches of ``batch_size``."""
    tf = import_tf()
    with tf.device("/CPU:0"):
        normalize = _normalizer(tf, mean, std)
        dataset = (
            tf.data.Dataset.from_tensor_slices((images, np.asarray(labels, np.int32)))
            .batch(batch_size)
            .map(lambda x, y: (normalize(x), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE)
        )
    return dataset.with_options(_deterministic(tf))
