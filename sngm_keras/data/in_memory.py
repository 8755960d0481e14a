"""A dataset held in memory, ready for either feed (tf.data or PyDataset):
its arrays less the held-out validation split, its normalization and
padding, and its `DatasetInfo`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import constants as C
from .arrays import ArraySplits, hold_out_validation, load_arrays, preprocessing
from .info import DatasetInfo, check_batch, check_image_size


@dataclass(frozen=True)
class InMemoryData:
    arrays: ArraySplits  # training images less the validation split, and the test images
    validation: tuple[np.ndarray, np.ndarray] | None  # (x, y) held out of training, or None
    mean: np.ndarray
    std: np.ndarray
    pad: int
    info: DatasetInfo


def load_in_memory(source, dataset, *, data_dir, download, image_size, validation_size, batch_size) -> InMemoryData:
    """Loads `dataset` (resolved as `source`), holds `validation_size`
    training images out and checks the batch against what is left. Raises
    `DataError`."""
    arrays = load_arrays(dataset, data_dir=data_dir, download=download)
    check_image_size(source, arrays, image_size)
    validation = None
    if validation_size:
        arrays, x_val, y_val = hold_out_validation(arrays, validation_size)
        validation = (x_val, y_val)
    mean, std, pad = preprocessing(source, arrays)
    name = C.SAMPLE if source.kind == "sample" else source.name
    check_batch(name, batch_size, arrays.num_train)
    info = DatasetInfo(
        name=name,
        num_classes=arrays.num_classes,
        image_shape=tuple(arrays.image_shape),
        num_train=arrays.num_train,
        num_test=arrays.num_test,
        class_names=tuple(arrays.class_names),
        num_validation=validation_size,
    )
    return InMemoryData(arrays, validation, mean, std, pad, info)
