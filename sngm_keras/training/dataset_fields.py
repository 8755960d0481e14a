"""The checks of a `TrainConfig`'s dataset fields (--dataset, --data_dir,
--image_size, --stream, --skip_bad_images), pure Python like the config: the
folder's layout is checked here, its images when the data is made."""

import os

from sngm_keras import checks
from sngm_keras.training.errors import ConfigError

DATASETS = ("sample", "cifar10", "cifar100", "imagenet2012")
TFDS_DATASETS = DATASETS[1:]
# The side ImageNet networks are trained at where a folder is streamed without --image_size.
IMAGENET_NETWORK_SIZE = 224


def is_folder(dataset):
    return dataset not in DATASETS


def ignored_dataset_fields(config):
    """The dataset fields `config` does not use, each with why."""
    ignored = {}
    if config.dataset not in ("imagenet2012",) and not is_folder(config.dataset):
        ignored["image_size"] = "applies to --dataset=imagenet2012 and image folders only"
    if not is_folder(config.dataset):
        for name in ("stream", "skip_bad_images"):
            ignored[name] = "applies to image folders (--dataset=DIR) only"
    if config.dataset not in TFDS_DATASETS:
        for name in ("data_dir", "download"):
            ignored[name] = f"applies to the TFDS datasets ({', '.join(TFDS_DATASETS)}) only"
    return ignored


def check_dataset_fields(config):
    """Raises ConfigError for the first bad dataset field."""
    _check_dataset(config.dataset, config.data_dir)
    if config.image_size is not None:
        checks.check_positive_int("image_size", config.image_size)
    ignored = ignored_dataset_fields(config)
    for name in ("image_size", "stream", "skip_bad_images"):
        if getattr(config, name) and name in ignored:
            raise ConfigError(name, ignored[name])


def default_image_size(config):
    """The size a streamed folder takes without --image_size, when its images
    differ in size: ImageNet's for the ImageNet ResNets, none for the others
    (the folder then needs --image_size)."""
    from sngm_keras.model_names import IMAGENET_LAYOUTS

    return IMAGENET_NETWORK_SIZE if config.model in IMAGENET_LAYOUTS else None


def _test_split(path):
    """``test``, or ``val`` where only that one exists (ImageNet's usual name)."""
    has_test = os.path.isdir(os.path.join(path, "test"))
    return "val" if not has_test and os.path.isdir(os.path.join(path, "val")) else "test"


def _check_dataset(dataset, data_dir):
    if dataset in DATASETS:
        if data_dir is not None and not os.path.isdir(os.path.expanduser(data_dir)):
            raise ConfigError("data_dir", f"{data_dir} is not a folder")
        return
    path = os.path.expanduser(str(dataset))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError("dataset", f"{dataset} is not a folder; give a folder holding train/ and test/")
    if not os.path.isdir(path):
        if os.sep in str(dataset) or str(dataset).startswith((".", "~")):
            raise ConfigError("dataset", f"no folder {dataset} (it should hold train/ and test/ of class folders)")
        raise ConfigError(
            "dataset",
            f"unknown {dataset!r}, and no folder of that name; choose one of {', '.join(DATASETS)} or a folder "
            "holding train/ and test/",
        )
    for split in ("train", _test_split(path)):
        if not os.path.isdir(os.path.join(path, split)):
            raise ConfigError("dataset", f"folder {dataset} has no {split}/ sub-folder of class folders")
