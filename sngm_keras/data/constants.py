"""Dataset names (`sngm_keras.dataset_names`'s) and per-channel normalization
statistics (RGB, 0..1 scale)."""

from sngm_keras.dataset_names import CIFAR10, CIFAR100, IMAGENET, SAMPLE

TFDS_IN_MEMORY = (CIFAR10, CIFAR100)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: (mean, std) by dataset name; folders use statistics of their own
#: training images instead (see `sngm_keras.data.pipeline`).
NORMALIZATION = {
    SAMPLE: (CIFAR10_MEAN, CIFAR10_STD),  # the sample is a CIFAR-10 subset
    CIFAR10: (CIFAR10_MEAN, CIFAR10_STD),
    CIFAR100: (CIFAR100_MEAN, CIFAR100_STD),
    IMAGENET: (IMAGENET_MEAN, IMAGENET_STD),
}

CIFAR_PAD = 4  # pixels of zero padding before the random 32x32 crop
IMAGENET_IMAGE_SIZE = 224
IMAGENET_RESIZE_RATIO = 256 / 224  # eval: shorter side to 256, center crop 224
IMAGENET_SHUFFLE_BUFFER = 10_000
