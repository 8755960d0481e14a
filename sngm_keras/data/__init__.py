"""Datasets for sngm_keras: in-memory arrays, and resumable input fed by
tf.data pipelines or by PyDatasets (`make_datasets`, the one way in).

Public API::

    load_arrays(dataset, data_dir=None, download=False) -> ArraySplits
    make_datasets(dataset, *, data_dir=None, download=False, batch_size,
                  eval_batch_size=None, augment=True, seed=0, start_epoch=0,
                  num_epochs, image_size=None, validation_size=0,
                  feed="tf.data", share=(0, 1), epoch_multiple=None)
        -> (train_ds, test_ds, DatasetInfo[, validation_ds])        # tf.data
        -> (train, test, DatasetInfo, preprocessing[, validation])  # feed="pydataset"
    steps_per_epoch(info, batch_size, epoch_multiple=None) -> int
    examples_per_epoch(num_train, batch_size, epoch_multiple=None) -> int
    examples_after(updates, batch_size, examples_per_epoch) -> int
    hold_out_validation(arrays, size) -> (kept ArraySplits, x_val, y_val)
    read_cifar(path) -> CifarCopy            # a local CIFAR-10/100 archive or folder
    prepare_tfds(copy, data_dir)             # ... as TFDS's prepared dataset, offline
    write_image_folders(arrays, out_dir)     # ... as DIR/{train,test}/<class>/<n>.png
    split_class_folders(source, out_dir, test_fraction, seed=0)
    progress.reported_to(reporter)         # long reads report what and how far

``dataset`` is "sample" (embedded CIFAR-10 subset), "cifar10", "cifar100",
"imagenet2012" (TFDS) or a folder ``DIR/{train,test}/<class>/<image>``.
Problems raise `DataError` (a ValueError) with a one-line message.
Importing this package does not import TensorFlow.
"""

from sngm_keras.dataset_names import DATASETS as KNOWN_DATASETS

from . import progress
from .arrays import (
    SAMPLE_PATH,
    ArraySplits,
    hold_out_validation,
    load_arrays,
    preprocessing,
    read_sample_file,
    sample_jpegs,
)
from .cifar_files import CifarCopy, read_cifar
from .constants import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALIZATION,
)
from .datasets import FEEDS, make_datasets
from .errors import DataError
from .importing import prepare_tfds, split_class_folders, write_image_folders
from .info import DatasetInfo, examples_after, examples_per_epoch, steps_per_epoch

__all__ = [
    "ArraySplits",
    "CifarCopy",
    "DataError",
    "FEEDS",
    "hold_out_validation",
    "preprocessing",
    "DatasetInfo",
    "KNOWN_DATASETS",
    "NORMALIZATION",
    "SAMPLE_PATH",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "load_arrays",
    "make_datasets",
    "progress",
    "read_sample_file",
    "sample_jpegs",
    "steps_per_epoch",
    "examples_per_epoch",
    "examples_after",
    "read_cifar",
    "prepare_tfds",
    "write_image_folders",
    "split_class_folders",
]
