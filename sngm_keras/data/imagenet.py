"""ImageNet (TFDS ``imagenet2012``) pipelines, decoded from the stored JPEGs.

ImageNet cannot be held in memory, so shuffling is done the usual streaming
way, but seeded per epoch: epoch ``e`` reads the TFDS files in an order
shuffled with a seed derived from ``(seed, e)``, passes the examples through
a shuffle buffer (`IMAGENET_SHUFFLE_BUFFER`) seeded from ``(seed, e)``, and
draws each example's random-resized crop and flip from stateless random ops
keyed by ``(seed, e, position in the epoch)``.  Each epoch is its own
pipeline and the epochs are concatenated, so a run resumed at epoch ``e``
sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np

from sngm_keras import checks

from . import constants as C
from . import crops, sources
from .errors import as_data_errors
from .info import DatasetInfo, batches, check_batch, check_start_batch, examples_per_epoch
from .tf_setup import epoch_key, import_tf


def _python_seed(seed: int, epoch: int, stream: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, epoch, stream]).generate_state(1)[0] & 0x7FFFFFFF)


def _concatenate(datasets):
    """Balanced concatenation (depth log2(n) instead of n)."""
    while len(datasets) > 1:
        datasets = [
            datasets[i].concatenate(datasets[i + 1]) if i + 1 < len(datasets) else datasets[i]
            for i in range(0, len(datasets), 2)
        ]
    return datasets[0]


def make_imagenet_datasets(
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
    epoch_multiple=None,
    start_batch=0,
):
    """See `sngm_keras.data.make_datasets`."""
    tf = import_tf()
    tfds = sources._import_tfds()
    name = C.IMAGENET
    with as_data_errors():
        checks.check_int("image_size", image_size, 8)
    builder, prepared = sources.tfds_builder(name, data_dir, download)
    decoders = {"image": tfds.decode.SkipDecoding()}

    def as_dataset(split, file_seed=None):
        # No reshuffling on re-iteration: Keras (JAX backend) opens the training
        # dataset twice, and both passes must see the same order.
        read_config = tfds.ReadConfig(
            shuffle_seed=file_seed, try_autocache=False, shuffle_reshuffle_each_iteration=False
        )
        return builder.as_dataset(
            split=split, shuffle_files=file_seed is not None, decoders=decoders, read_config=read_config
        )

    probe = sources.load_or_raise(name, data_dir, prepared, lambda: as_dataset("train", 0))
    val_ds = sources.load_or_raise(name, data_dir, prepared, lambda: as_dataset("validation"))

    def count(ds, split):
        n = int(ds.cardinality())
        return n if n >= 0 else int(builder.info.splits[split].num_examples)

    num_train, num_test = count(probe, "train"), count(val_ds, "validation")
    check_batch(name, batch_size, num_train)
    used = examples_per_epoch(num_train, batch_size, epoch_multiple)
    steps = batches(used, batch_size)
    check_start_batch(start_batch, steps)
    whole = used % batch_size == 0
    class_names = tuple(builder.info.features["label"].names)
    info = DatasetInfo(
        name=name,
        num_classes=len(class_names),
        image_shape=(image_size, image_size, 3),
        num_train=num_train,
        num_test=num_test,
        class_names=class_names,
    )

    normalize = crops.normalizer(tf, *C.NORMALIZATION[name], image_size)

    def eval_image(encoded):
        image = crops.eval_crop(tf, tf.io.decode_jpeg(encoded, channels=3), image_size)
        return normalize(image, resize=False)

    def train_image(encoded, key):
        crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        window = crops.crop_window(tf, tf.io.extract_jpeg_shape(encoded), crop_key)
        image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
        return normalize(tf.cast(crops.flip(tf, image, flip_key), tf.float32))

    def epoch_dataset(epoch):
        key = epoch_key(tf, seed, epoch)
        ds = as_dataset("train", _python_seed(seed, epoch, 0))
        ds = ds.shuffle(C.IMAGENET_SHUFFLE_BUFFER, seed=_python_seed(seed, epoch, 1), reshuffle_each_iteration=False)
        ds = ds.take(used).enumerate()
        if epoch == start_epoch and start_batch:  # skipped before decoding: read, not decoded or augmented
            ds = ds.skip(start_batch * batch_size)

        def prep(i, ex):
            if augment:
                image = train_image(ex["image"], tf.random.experimental.stateless_fold_in(key, i))
            else:
                image = eval_image(ex["image"])
            return image, tf.cast(ex["label"], tf.int32)

        return ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(
            batch_size, drop_remainder=whole
        )

    epochs = [epoch_dataset(e) for e in range(start_epoch, num_epochs)]
    if epochs:
        train_ds = _concatenate(epochs)
    else:  # start_epoch == num_epochs: nothing left to train
        train_ds = tf.data.Dataset.from_tensors(
            (tf.zeros([batch_size, image_size, image_size, 3]), tf.zeros([batch_size], tf.int32))
        ).take(0)
    train_ds = train_ds.apply(
        tf.data.experimental.assert_cardinality((num_epochs - start_epoch) * steps - start_batch)
    ).prefetch(tf.data.AUTOTUNE)
    test_ds = (
        val_ds.map(
            lambda ex: (eval_image(ex["image"]), tf.cast(ex["label"], tf.int32)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .batch(eval_batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    options = tf.data.Options()
    options.deterministic = True
    return train_ds.with_options(options), test_ds.with_options(options), info
