"""The PyDataset feed: arrays in memory, no tf.data (the JAX path's input).

`make_pydatasets` is `sngm_keras.data.make_datasets(feed="pydataset")` for
the datasets that fit in memory (the sample, cifar10/cifar100 from a
TFDS-prepared data_dir, folders of class sub-folders): it returns
`keras.utils.PyDataset`s that yield uint8 images and int32 labels, and the
`CropFlipNormalize` layer that the training model
(`sngm_keras.accumulation.PreprocessedMicroBatchModel`) applies on the
device (pad, crop, flip with training=True, then normalize).

Determinism, as on the tf.data path: epoch e's order is a permutation from
``np.random.default_rng([seed, SALT, e])``, and its augmentation draws (one
int32 per example, see `sngm_keras.augment`) come from the same generator,
so epoch e depends only on (seed, e). The training PyDataset spans epochs
``start_epoch .. num_epochs - 1`` back to back (item i is step
``i % steps`` of epoch ``start_epoch + i // steps``) and keeps no state, so
`fit(steps_per_epoch=steps, initial_epoch=start_epoch)` resumes exactly,
whatever Keras calls `on_epoch_end` for.

Several processes (`--strategy=multi_worker`): every process computes the
same global batches and yields its share, rows ``p * B / P .. (p + 1) * B / P``
of each batch for process p of P, the rows JAX places on p's devices when it
assembles the global batch (`jax.make_array_from_process_local_data`).

Nothing here imports TensorFlow, except that loading cifar10/cifar100 needs
TensorFlow Datasets (and TensorFlow); without them pass the images as a
folder (``--dataset=DIR`` with ``DIR/{train,test}/<class>/<image>``).
"""

import logging

import keras
import numpy as np

from sngm_keras.augment import CropFlipNormalize, num_draws

from . import constants as C
from . import sources
from .errors import DataError
from .in_memory import load_in_memory
from .info import batches, check_start_batch, examples_per_epoch
from .tf_setup import import_tf

log = logging.getLogger("sngm_keras")

_SALT = 0x4A4158  # "JAX": this path's streams, apart from other uses of `seed`


class TrainBatches(keras.utils.PyDataset):
    """Training batches of epochs ``start_epoch .. num_epochs - 1``, back to back.

    Item i: ``({"images": uint8 [B, H, W, C], "crop_flip": int32 [B]},
    labels int32 [B])``, "crop_flip" only with augmentation. Each epoch uses
    the first ``examples_per_epoch`` indices of a fresh permutation, in
    batches of B (the last one smaller when ``epoch_multiple`` keeps part of a
    batch). With
    ``share=(p, P)`` the items hold process p's B / P rows of each batch.
    """

    def __init__(
        self,
        x,
        y,
        *,
        batch_size,
        seed,
        start_epoch,
        num_epochs,
        pad=None,
        share=(0, 1),
        epoch_multiple=None,
        start_batch=0,
    ):
        super().__init__()  # workers=1: items are built in the training thread, in order
        self.x, self.y = x, y
        self.share = share
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.start_epoch, self.num_epochs = int(start_epoch), int(num_epochs)
        self.start_batch = int(start_batch)  # the first epoch starts at this batch
        self.used = examples_per_epoch(len(x), self.batch_size, epoch_multiple)
        self.steps = batches(self.used, self.batch_size)
        check_start_batch(self.start_batch, self.steps)
        self.draws = None if pad is None else num_draws(pad)
        self._cached = (None, None, None)

    @property
    def num_batches(self):
        return (self.num_epochs - self.start_epoch) * self.steps - self.start_batch

    def __len__(self):
        return self.num_batches

    def epoch_order(self, epoch):
        """(indices [steps * B], draws [steps * B] or None) of `epoch`."""
        if self._cached[0] != epoch:
            rng = np.random.default_rng([self.seed, _SALT, int(epoch)])
            order = rng.permutation(len(self.x))[: self.used]
            draws = None if self.draws is None else rng.integers(0, self.draws, size=self.used, dtype=np.int32)
            self._cached = (epoch, order, draws)
        return self._cached[1], self._cached[2]

    def __getitem__(self, index):
        if not 0 <= index < self.num_batches:
            raise IndexError(index)
        position = index + self.start_batch
        epoch = self.start_epoch + position // self.steps
        start = (position % self.steps) * self.batch_size
        rows = slice(start, min(start + self.batch_size, self.used))
        order, draws = self.epoch_order(epoch)
        idx = _share(order[rows], self.share)
        inputs = {"images": self.x[idx]}
        if draws is not None:
            inputs["crop_flip"] = _share(draws[rows], self.share)
        return inputs, self.y[idx]


class TestBatches(keras.utils.PyDataset):
    """The test split in order, batches of `batch_size` (the last one smaller);
    with ``share=(p, P)`` process p's part of each."""

    def __init__(self, x, y, batch_size, share=(0, 1)):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, int(batch_size)
        self.share = share

    @property
    def num_batches(self):
        return batches(len(self.x), self.batch_size)

    def __len__(self):
        return self.num_batches

    def __getitem__(self, index):
        if not 0 <= index < self.num_batches:
            raise IndexError(index)
        rows = _share(np.arange(index * self.batch_size, min((index + 1) * self.batch_size, len(self.x))), self.share)
        return {"images": self.x[rows]}, self.y[rows]


def _share(rows, share):
    """Process p's contiguous part of `rows` (``share=(p, P)``)."""
    index, count = share
    if count == 1:
        return rows
    size = len(rows) // count
    return rows[index * size : (index + 1) * size]


def _tensorflow_datasets_available():
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        return False
    return True


def make_pydatasets(
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
    share,
    epoch_multiple=None,
    start_batch=0,
):
    """The PyDataset feed of `sngm_keras.data.make_datasets` (see there):
    ``(train, test, info, preprocessing)``, and the held-out ``validation``
    batches after them when ``validation_size`` > 0 (the same images as the
    tf.data feed holds out).

    `train` and `test` are `PyDataset`s (see `TrainBatches`, `TestBatches`),
    `info` a `sngm_keras.data.DatasetInfo`, and `preprocessing` the
    `CropFlipNormalize` layer with the dataset's normalization and padding
    (as the tf.data feed uses: CIFAR statistics for the sample and CIFAR,
    the folder's own for folders). ``share=(p, P)``: process p of P takes
    its part of every batch. Raises `DataError`.
    """
    source = sources.resolve(dataset)
    if source.kind == "tfds":
        if source.name not in C.TFDS_IN_MEMORY:
            raise DataError(f"{source.name} needs the TensorFlow input pipeline: run it with KERAS_BACKEND=tensorflow")
        if not _tensorflow_datasets_available():
            raise DataError(
                f"{source.name} is read from TFDS, which needs TensorFlow (not installed here): "
                "pass the images as a folder instead, --dataset=DIR with "
                "DIR/{train,test}/<class>/<image>"
            )
        import_tf()  # keeps TensorFlow off the accelerators before TFDS starts it
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
    train = TrainBatches(
        arrays.x_train,
        arrays.y_train,
        batch_size=batch_size,
        seed=seed,
        start_epoch=start_epoch,
        num_epochs=num_epochs,
        pad=pad if augment else None,
        share=share,
        epoch_multiple=epoch_multiple,
        start_batch=start_batch,
    )
    test = TestBatches(arrays.x_test, arrays.y_test, eval_batch_size, share=share)
    preprocess = CropFlipNormalize(mean, std, pad, name="crop_flip_normalize")
    if data.validation is None:
        return train, test, data.info, preprocess
    return train, test, data.info, preprocess, TestBatches(*data.validation, eval_batch_size, share=share)
