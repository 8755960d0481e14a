"""`make_datasets`: the one way into a run's input, fed by tf.data or by PyDatasets.

Two feeds give the same batches of the same images in the same order:

- ``feed="tf.data"`` (`sngm_keras.data.pipeline`, `sngm_keras.data.imagenet`):
  tf.data pipelines that augment and normalize on the host; TensorFlow's
  input path, and the only one for ImageNet.
- ``feed="pydataset"`` (`sngm_keras.data.pydatasets`): `keras.utils.PyDataset`s
  over uint8 arrays in memory, with the preprocessing as a layer to run on
  the device; the JAX path, which needs no TensorFlow.
"""

from __future__ import annotations

from . import folder_stream, pipeline, sources
from .errors import DataError
from .info import check_args

FEEDS = ("tf.data", "pydataset")


def make_datasets(
    dataset,
    *,
    data_dir=None,
    download: bool = False,
    batch_size: int,
    eval_batch_size: int | None = None,
    augment: bool = True,
    seed: int = 0,
    start_epoch: int = 0,
    num_epochs: int,
    image_size: int | None = None,
    validation_size: int = 0,
    feed: str = "tf.data",
    share=(0, 1),
    epoch_multiple: int | None = None,
    start_batch: int = 0,
    stream: bool = False,
    skip_bad_images: bool = False,
    default_image_size: int | None = None,
    replica_batches: int = 1,
):
    """Builds ``(train_ds, test_ds, info)`` for `keras.Model.fit`, and
    ``validation_ds`` after them when ``validation_size`` > 0.

    ``train_ds`` yields ``(images float32 normalized NHWC, labels int32)`` in
    batches of ``batch_size`` and covers epochs ``start_epoch`` ..
    ``num_epochs - 1`` back to back, ``steps_per_epoch(info, batch_size,
    epoch_multiple)`` batches each, so use::

        model.fit(train_ds, epochs=num_epochs, initial_epoch=start_epoch,
                  steps_per_epoch=steps_per_epoch(info, batch_size, epoch_multiple),
                  validation_data=test_ds)

    Each epoch uses the most training examples that are a multiple of
    ``epoch_multiple`` (`examples_per_epoch`). By default that is
    ``batch_size``: whole batches, the rest of the epoch dropped. Training
    with micro-batches, pass the micro-batch times the replicas: the epoch
    then ends with a smaller batch of whole micro-batches, and every batch
    size trains on the same examples per epoch. The batch dimension is then
    unknown when the step is traced (it is static when every batch is whole).

    ``test_ds`` is the whole test split (ImageNet: validation split) in order,
    batches of ``eval_batch_size`` (default ``min(batch_size, 1000)``), the
    last one possibly smaller.

    With ``feed="pydataset"`` the datasets are `keras.utils.PyDataset`s that
    yield ``{"images": uint8, "crop_flip": int32 draws}`` instead of
    normalized images, and ``(train, test, info, preprocessing[, validation])``
    come back: ``preprocessing`` is the `sngm_keras.augment.CropFlipNormalize`
    layer that turns them into the tf.data feed's images on the device (see
    `sngm_keras.data.pydatasets`). ImageNet has the tf.data feed only.

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
      start_batch: where in ``start_epoch`` it starts (a resume within an
        epoch): ``train_ds`` then holds that epoch's last ``steps -
        start_batch`` batches first; the batches before are skipped as
        indices, not read one by one (ImageNet: read, not decoded).
      image_size: ImageNet output size (default 224); folders: the size they
        are streamed at (see below); for the others leave it None (or equal
        to their native size).
      stream, skip_bad_images, default_image_size, replica_batches: image
        folders only. A folder whose images all have one size (and fit in
        memory) is read into memory at that size, unless ``stream``; any
        other is streamed from its files (`sngm_keras.data.folder_stream`)
        at ``image_size`` (default: the images' size where they are square
        and all alike, else ``default_image_size``), with ImageNet's
        random-resized crop and flip and ImageNet's normalization, on
        either feed. ``skip_bad_images``: files that do not decode are left
        out (else they are named in the `DataError`).
        ``replica_batches``: a streamed folder's batches (or shares) come
        as that many per-replica batches, for
        ``distribute_datasets_from_function``.
      validation_size: hold this many training images out (a fixed random
        subset, the same for every seed; `hold_out_validation`) and return
        them, batched like ``test_ds``, as the last value; ``train_ds``
        and ``info.num_train`` then cover the rest. In-memory datasets only.
      feed: ``"tf.data"`` or ``"pydataset"`` (see the module docstring).
      share: ``(p, P)``, PyDatasets and streamed folders only: process p of
        P takes its part of every batch (several JAX processes, each feeding
        its devices; a streamed folder reads only its part's files).
      epoch_multiple: see above; it must divide ``batch_size`` (every feed,
        ImageNet's streaming one too).

    Normalization: per channel ``(x / 255 - mean) / std`` with the standard
    statistics of CIFAR-10 (also for the sample), CIFAR-100 or ImageNet
    (`sngm_keras.data.constants`); folders use the mean/std of their own
    training images.

    Raises:
      DataError (ValueError) with a one-line message: unknown dataset,
      missing folder, TFDS data not present with ``download=False``,
      ``batch_size`` larger than the training set, bad arguments.
    """
    check_args(batch_size, eval_batch_size, start_epoch, num_epochs, epoch_multiple, start_batch)
    if feed not in FEEDS:
        raise DataError(f"feed must be one of {', '.join(FEEDS)}, got {feed!r}")
    eval_batch_size = eval_batch_size or min(batch_size, 1000)
    common = dict(
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        augment=augment,
        seed=seed,
        start_epoch=start_epoch,
        num_epochs=num_epochs,
        image_size=image_size,
        validation_size=validation_size,
        epoch_multiple=epoch_multiple,
        start_batch=start_batch,
    )
    streamed = folder_stream.streamed_folder(
        sources.resolve(dataset),
        stream=stream,
        skip_bad_images=skip_bad_images,
        default_image_size=default_image_size,
        share=tuple(share),
        replica_batches=replica_batches,
        **common,
    )
    if streamed is not None:  # the same tf.data pipeline on either feed, with no on-device preprocessing
        return streamed if feed == "tf.data" else (*streamed, None)
    if tuple(share) != (0, 1) and feed == "tf.data":
        raise DataError("share: tf.distribute shards the tf.data feed; share is the PyDatasets' and streams'")
    if replica_batches != 1:
        raise DataError("replica_batches applies to streamed image folders only")
    common.update(data_dir=data_dir, download=download)
    if feed == "pydataset":
        from . import pydatasets  # imports Keras: only on this feed

        return pydatasets.make_pydatasets(dataset, share=share, **common)
    return pipeline.make_tf_datasets(dataset, **common)
