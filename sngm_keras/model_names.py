"""The networks of `sngm_keras.models.build_model`, by name. Apart from the
models so that a configuration is checked without importing Keras."""

# CIFAR ResNets (He et al. 2016, Section 4.2): name -> depth.
CIFAR_DEPTHS = {
    "resnet20": 20,
    "resnet32": 32,
    "resnet44": 44,
    "resnet56": 56,
    "resnet110": 110,
}
# ImageNet ResNets (He et al. 2016, Table 1): name -> (block, blocks per stage).
IMAGENET_LAYOUTS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}

MODEL_NAMES = (*CIFAR_DEPTHS, *IMAGENET_LAYOUTS, "twoconv")
