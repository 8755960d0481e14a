"""The datasets `sngm_keras.data` knows by name, and their sizes. Apart from
the data package so that a configuration is checked, and a study's length
estimated, without importing TensorFlow."""

SAMPLE = "sample"
CIFAR10 = "cifar10"
CIFAR100 = "cifar100"
IMAGENET = "imagenet2012"

DATASETS = (SAMPLE, CIFAR10, CIFAR100, IMAGENET)
TFDS_DATASETS = (CIFAR10, CIFAR100, IMAGENET)
NUM_CLASSES = {SAMPLE: 10, CIFAR10: 10, CIFAR100: 100, IMAGENET: 1000}
# (training, test) images of the TFDS datasets' official splits.
SPLIT_SIZES = {CIFAR10: (50_000, 10_000), CIFAR100: (50_000, 10_000), IMAGENET: (1_281_167, 50_000)}
