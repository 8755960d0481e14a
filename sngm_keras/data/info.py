"""What both input feeds report and check: `DatasetInfo`, steps per epoch,
and the argument checks shared by the tf.data pipelines and the PyDatasets."""

from __future__ import annotations

from dataclasses import dataclass

from sngm_keras import checks

from . import constants as C
from .errors import DataError, as_data_errors


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
    streamed: bool = False  # read from the files as it trains (sharded by file), not held in memory


def examples_per_epoch(num_train: int, batch_size: int, epoch_multiple: int | None = None) -> int:
    """The training examples each epoch uses: the most that are a multiple of
    `epoch_multiple` (default `batch_size`: whole batches only).

    With micro-batches, `epoch_multiple` = micro-batch x replicas keeps a last,
    smaller batch of whole micro-batches, so that every batch size built from
    the same micro-batch trains on the same examples per epoch (dropping the
    remainder of whole batches would cost B = 8192 about 9% of CIFAR-10's
    45,000 training images an epoch, against 0.2% at B = 128).
    """
    multiple = epoch_multiple or batch_size
    return num_train // multiple * multiple


def batches(examples: int, batch_size: int) -> int:
    """Batches of `batch_size` that hold `examples`, the last one possibly smaller."""
    return -(-examples // batch_size)


def steps_per_epoch(info: DatasetInfo, batch_size: int, epoch_multiple: int | None = None) -> int:
    """Batches per training epoch: `examples_per_epoch` in batches of
    `batch_size`, the last one possibly smaller."""
    return batches(examples_per_epoch(info.num_train, batch_size, epoch_multiple), batch_size)


def examples_after(updates: int, batch_size: int, examples_per_epoch: int) -> int:
    """Training examples consumed by `updates` steps: every step of an epoch
    holds `batch_size` examples but its last, which holds the rest of
    `examples_per_epoch`."""
    steps = batches(examples_per_epoch, batch_size)
    return updates // steps * examples_per_epoch + updates % steps * batch_size


@as_data_errors()
def check_args(batch_size, eval_batch_size, start_epoch, num_epochs, epoch_multiple=None, start_batch=0):
    checks.check_positive_int("batch_size", batch_size)
    if epoch_multiple is not None:
        checks.check_positive_int("epoch_multiple", epoch_multiple)
        if batch_size % epoch_multiple:
            raise DataError(f"epoch_multiple {epoch_multiple} must divide batch_size {batch_size}")
    num_epochs = checks.check_positive_int("num_epochs", num_epochs)
    if eval_batch_size is not None:
        checks.check_positive_int("eval_batch_size", eval_batch_size)
    checks.check_int("start_epoch", start_epoch, 0, num_epochs)
    checks.check_int("start_batch", start_batch, 0, None)
    if start_batch and start_epoch == num_epochs:
        raise DataError(f"start_batch {start_batch}: start_epoch {start_epoch} is past the last epoch")


def check_batch(name, batch_size, num_train):
    if batch_size > num_train:
        raise DataError(
            f"batch_size {batch_size} is larger than the {num_train} training "
            f"images of {name}; use a batch_size of at most {num_train}"
        )


def check_image_size(source, arrays, image_size):
    """In-memory datasets keep their native size: `image_size` is ImageNet's
    and the streamed folders'."""
    if image_size is not None and tuple(arrays.image_shape[:2]) != (image_size, image_size):
        raise DataError(
            f"image_size={image_size} is only supported for {C.IMAGENET} and image folders; "
            f"{source.name} images are {arrays.image_shape[1]}x"
            f"{arrays.image_shape[0]}: leave image_size unset"
        )


def check_start_batch(start_batch, steps):
    """A resume within an epoch starts at one of its batches."""
    if start_batch >= steps:
        raise DataError(f"start_batch {start_batch}: an epoch here has {steps} batches")
