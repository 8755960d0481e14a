"""The rules of a `TrainConfig`'s dataset fields (--dataset, --data_dir,
--image_size, --stream, --skip_bad_images): which apply to which dataset,
and the size a streamed folder takes by default. Pure Python like the
config: the folder's layout is checked here, its images when the data is
made."""

from sngm_keras import checks
from sngm_keras.dataset_names import DATASETS, TFDS_DATASETS
from sngm_keras.training.config_checks import check_dataset
from sngm_keras.training.errors import ConfigError

# The side ImageNet networks are trained at where a folder is streamed without --image_size.
IMAGENET_NETWORK_SIZE = 224


def is_folder(dataset):
    return dataset not in DATASETS


def ignored_dataset_fields(config):
    """The dataset fields `config` does not use, each with why."""
    ignored = {}
    if config.dataset != "imagenet2012" and not is_folder(config.dataset):
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
    check_dataset(config.dataset, config.data_dir)
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
