"""tf.data input pipelines for `model.fit`, resumable at any epoch.

TensorFlow is imported lazily, when `make_datasets` is called.

Determinism: the order and the augmentation of epoch ``e`` depend only on
``(seed, e)`` (and on ``batch_size``, which fixes how many examples each
epoch keeps), so a run resumed with ``start_epoch=e`` sees exactly the
batches an uninterrupted run sees from epoch ``e`` on.  In-memory datasets
draw a fresh permutation per epoch with a stateless shuffle seeded by
``(seed, e)``, and crop offsets and flips per example from stateless random
ops keyed by ``(seed, e, position in the epoch)``.  ImageNet: see
`sngm_keras.data.imagenet`.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

from . import constants as C
from . import sources
from .arrays import ArraySplits, hold_out_validation, load_arrays, preprocessing
from .errors import DataError

_SEED_SALT = 0x53474D  # "SGM": separates our streams from other uses of `seed`


@dataclass(frozen=True)
class DatasetInfo:
    """What the model and the training loop need to know about a dataset."""
    name: str
    num_classes: int
    image_shape: tuple  # (H, W, C) of the images the pipelines yield
    num_train: int
    num_test: int
    class_names: tuple
    num_validation: int = 0  # training images held out (not in num_train)


def steps_per_epoch(info: DatasetInfo, batch_size: int) -> int:
    """Batches per training epoch (the remainder of each epoch is dropped)."""
    return info.num_train // batch_size


def import_tf():
    """Imports TensorFlow for the input pipeline.

    When Keras runs on another backend (JAX, torch), TensorFlow is only used
    for tf.data and is kept off the GPUs, so it does not reserve their memory
    (as the Keras docs recommend).  This only works before TensorFlow has
    initialized its devices; otherwise it is left as is.
    """
    import tensorflow as tf
    keras = sys.modules.get("keras")
    backend = None
    if keras is not None and hasattr(keras, "config"):
        try:
            backend = keras.config.backend()
        except Exception:  # pragma: no cover
            backend = None
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow":
        try:
            tf.config.set_visible_devices([], "GPU")
        except (RuntimeError, ValueError):
            pass
    return tf


def epoch_key(tf, seed: int, epoch):
    """Stateless-RNG key (int64 [2]) for epoch ``epoch`` (int or scalar tensor)."""
    base = tf.constant([int(seed), _SEED_SALT], dtype=tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))


def _check_args(batch_size, eval_batch_size, start_epoch, num_epochs):
    for label, value in (("batch_size", batch_size), ("num_epochs", num_epochs)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise DataError(f"{label} must be a positive integer, got {value!r}")
    if eval_batch_size is not None and (not isinstance(eval_batch_size, (int, np.integer))
                                        or eval_batch_size < 1):
        raise DataError("eval_batch_size must be a positive integer or None, "
                        f"got {eval_batch_size!r}")
    if not isinstance(start_epoch, (int, np.integer)) or not 0 <= start_epoch <= num_epochs:
        raise DataError(f"start_epoch must be in 0..num_epochs={num_epochs}, got {start_epoch!r}")


def _check_batch(name, batch_size, num_train):
    if batch_size > num_train:
        raise DataError(f"batch_size {batch_size} is larger than the {num_train} training "
                        f"images of {name}; use a batch_size of at most {num_train}")


def make_datasets(dataset, *, data_dir=None, download: bool = False, batch_size: int,
                  eval_batch_size: int | None = None, augment: bool = True, seed: int = 0,
                  start_epoch: int = 0, num_epochs: int, image_size: int | None = None,
                  validation_size: int = 0):
    """Builds ``(train_ds, test_ds, info)`` for `keras.Model.fit`, and
    ``validation_ds`` after them when ``validation_size`` > 0.

    ``train_ds`` yields ``(images float32 normalized NHWC, labels int32)`` in
    batches of exactly ``batch_size`` and covers epochs ``start_epoch`` ..
    ``num_epochs - 1`` back to back, ``steps_per_epoch(info, batch_size)``
    batches each (the last partial batch of each epoch is dropped), so use::

        model.fit(train_ds, epochs=num_epochs, initial_epoch=start_epoch,
                  steps_per_epoch=steps_per_epoch(info, batch_size),
                  validation_data=test_ds)

    ``test_ds`` is the whole test split (ImageNet: validation split) in order,
    batches of ``eval_batch_size`` (default ``min(batch_size, 1000)``), the
    last one possibly smaller.

    Args:
      dataset: ``"sample"``, ``"cifar10"``, ``"cifar100"``, ``"imagenet2012"``
        or a folder ``DIR/{train,test}/<class>/<image>`` (see `load_arrays`).
      data_dir, download: TFDS data_dir, and whether TFDS may download.
      augment: training augmentation. CIFAR-style data (sample, cifar,
        folders): zero-pad 4 pixels (folders: ``round(min(H, W) / 8)``),
        random crop back to the original size, random horizontal flip.
        ImageNet: random-resized crop (scale 0.08-1, ratio 3/4-4/3) to
        ``image_size`` and random flip.  With ``augment=False`` the training
        images get the eval preprocessing (still shuffled per epoch).
      seed: seeds the per-epoch order and augmentation.  In-memory data:
        a stateless permutation per epoch; ImageNet (streamed from TFDS
        files, too big for memory): per-epoch file-order shuffle plus a
        shuffle buffer, both seeded by (seed, epoch) -- see
        `sngm_keras.data.imagenet`.  Either way epoch e depends only on
        (seed, e).
      start_epoch, num_epochs: the epochs ``train_ds`` covers.
      image_size: ImageNet output size (default 224); for the other datasets
        leave it None (or equal to their native size).
      validation_size: hold this many training images out (a fixed random
        subset, the same for every seed; `hold_out_validation`) and return
        them, batched like ``test_ds``, as a fourth value; ``train_ds``
        and ``info.num_train`` then cover the rest. In-memory datasets only.

    Normalization: per channel ``(x / 255 - mean) / std`` with the standard
    statistics of CIFAR-10 (also for the sample), CIFAR-100 or ImageNet
    (`sngm_keras.data.constants`); folders use the mean/std of their own
    training images.

    Raises:
      DataError (ValueError) with a one-line message: unknown dataset,
      missing folder, TFDS data not present with ``download=False``,
      ``batch_size`` larger than the training set, bad arguments.
    """
    _check_args(batch_size, eval_batch_size, start_epoch, num_epochs)
    eval_batch_size = eval_batch_size or min(batch_size, 1000)
    source = sources.resolve(dataset)
    if source.kind == "tfds" and source.name == C.IMAGENET:
        if validation_size:
            raise DataError(f"validation_size: {C.IMAGENET} is streamed from files; holding out training "
                            "images is supported for in-memory datasets only")
        from . import imagenet
        return imagenet.make_imagenet_datasets(
            data_dir=data_dir, download=download, batch_size=batch_size,
            eval_batch_size=eval_batch_size, augment=augment, seed=seed,
            start_epoch=start_epoch, num_epochs=num_epochs,
            image_size=image_size or C.IMAGENET_IMAGE_SIZE)

    arrays = load_arrays(dataset, data_dir=data_dir, download=download)
    if image_size is not None and tuple(arrays.image_shape[:2]) != (image_size, image_size):
        raise DataError(f"image_size={image_size} is only supported for {C.IMAGENET}; "
                        f"{source.name} images are {arrays.image_shape[1]}x"
                        f"{arrays.image_shape[0]}: leave image_size unset")
    if validation_size:
        arrays, x_val, y_val = hold_out_validation(arrays, validation_size)
    mean, std, pad = preprocessing(source, arrays)
    name = C.SAMPLE if source.kind == "sample" else source.name
    _check_batch(name, batch_size, arrays.num_train)
    info = DatasetInfo(name=name, num_classes=arrays.num_classes,
                       image_shape=tuple(arrays.image_shape), num_train=arrays.num_train,
                       num_test=arrays.num_test, class_names=tuple(arrays.class_names),
                       num_validation=validation_size)
    train_ds, test_ds = in_memory_datasets(
        arrays, mean=mean, std=std, pad=pad, batch_size=batch_size,
        eval_batch_size=eval_batch_size, augment=augment, seed=seed,
        start_epoch=start_epoch, num_epochs=num_epochs)
    if not validation_size:
        return train_ds, test_ds, info
    return train_ds, test_ds, info, eval_dataset(x_val, y_val, mean, std, eval_batch_size)


def in_memory_datasets(arrays: ArraySplits, *, mean, std, pad, batch_size, eval_batch_size,
                       augment, seed, start_epoch, num_epochs):
    """Train/test pipelines over uint8 arrays held in memory.

    Each epoch: a permutation of the training set from a stateless shuffle
    keyed by (seed, epoch), cut into ``num_train // batch_size`` index
    batches; each batch is gathered from the in-memory tensor and augmented
    in one vectorized step (pad, crop at per-example random offsets, flip),
    the offsets and flips of example ``i`` of the epoch coming from a
    stateless uniform draw keyed by (seed, epoch) at row ``i``.
    """
    tf = import_tf()
    height, width, channels = arrays.image_shape
    n = arrays.num_train
    steps = n // batch_size
    used = steps * batch_size
    crop_choices = 2 * pad + 1

    with tf.device("/CPU:0"):
        x_train = tf.constant(arrays.x_train)
        y_train = tf.constant(arrays.y_train, dtype=tf.int32)
        normalize = _normalizer(tf, mean, std)

    def epoch_indices(epoch):
        perm_key, aug_key = tf.unstack(
            tf.random.experimental.stateless_split(epoch_key(tf, seed, epoch), 2))
        perm = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int32),
                                                        seed=perm_key)[:used]
        # One uniform draw per example encodes (dy, dx, flip).
        draw = tf.random.stateless_uniform([used], seed=aug_key, minval=0,
                                           maxval=2 * crop_choices * crop_choices,
                                           dtype=tf.int32)
        return tf.data.Dataset.from_tensor_slices(
            (tf.reshape(perm, [steps, batch_size]), tf.reshape(draw, [steps, batch_size])))

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
            col_idx = tf.where(flip[:, None], dx[:, None] + (width - 1 - cols)[None, :],
                               dx[:, None] + cols[None, :])
            images = tf.gather(padded, row_idx, axis=1, batch_dims=1)
            images = tf.gather(images, col_idx, axis=2, batch_dims=1)
        images = tf.ensure_shape(normalize(images), [batch_size, height, width, channels])
        return images, tf.ensure_shape(labels, [batch_size])

    train_ds = (tf.data.Dataset.range(start_epoch, num_epochs)
                .flat_map(epoch_indices)
                .map(train_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .apply(tf.data.experimental.assert_cardinality((num_epochs - start_epoch) * steps))
                .prefetch(tf.data.AUTOTUNE))

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
        dataset = (tf.data.Dataset.from_tensor_slices((images, np.asarray(labels, np.int32)))
                   .batch(batch_size)
                   .map(lambda x, y: (normalize(x), y), num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
                   .prefetch(tf.data.AUTOTUNE))
    return dataset.with_options(_deterministic(tf))
