"""Keras 3 model builders for the SNGM experiments.

The residual networks follow He, Zhang, Ren and Sun, "Deep Residual Learning
for Image Recognition", CVPR 2016 (He et al. 2016):

* ``resnet20/32/44/56/110``: the CIFAR-10 networks of Section 4.2 (v1, basic
  blocks with 16/32/64 filters, parameter-free "option A" shortcuts).
* ``resnet18/34/50``: the ImageNet networks of Table 1 in torchvision's layout
  (projection shortcuts where the shape changes; ResNet-50 strides on the 3x3
  convolution of the bottleneck, "v1.5"), so parameter counts match torchvision.

``twoconv`` is the "network with two convolutional layers" of Figure 1 of the
SNGM paper (Zhao et al., "Stochastic Normalized Gradient Descent with Momentum
for Large-Batch Training").

Only ``keras`` is used, so the models run on the TensorFlow and JAX backends.
Images are channels-last and already normalized; every model returns logits.
"""

import keras
import numpy as np
from keras import layers, ops

from sngm_keras.model_names import CIFAR_DEPTHS as _CIFAR_DEPTHS
from sngm_keras.model_names import IMAGENET_LAYOUTS as _IMAGENET_LAYOUTS
from sngm_keras.model_names import MODEL_NAMES

# PyTorch's BatchNorm2d defaults (momentum=0.1 there is 0.9 in Keras' convention),
# as used by the code the papers' numbers come from.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


class _Initializers:
    """Hands out kernel initializers, each seeded differently from one base seed.

    An integer-seeded Keras initializer gives the same values on every call, so
    sharing one between layers of the same shape would make them identical.
    """

    def __init__(self, seed):
        self._seed = seed
        self._count = 0

    def _next_seed(self):
        if self._seed is None:
            return None
        self._count += 1
        sequence = np.random.SeedSequence(self._seed, spawn_key=(self._count,))
        return int(sequence.generate_state(1)[0])

    def he_normal(self):
        return keras.initializers.HeNormal(seed=self._next_seed())

    def glorot_uniform(self):
        return keras.initializers.GlorotUniform(seed=self._next_seed())

    def pytorch_linear_bias(self, fan_in):
        """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the bias of PyTorch's nn.Linear."""
        bound = 1.0 / np.sqrt(fan_in)
        return keras.initializers.RandomUniform(-bound, bound, seed=self._next_seed())


@keras.saving.register_keras_serializable(package="sngm_keras")
class OptionAShortcut(layers.Layer):
    """He et al.'s parameter-free shortcut: subsample by `strides`, zero-pad channels."""

    def __init__(self, strides, extra_channels, **kwargs):
        super().__init__(**kwargs)
        self.strides = strides
        self.extra_channels = extra_channels

    def call(self, inputs):
        x = inputs[:, :: self.strides, :: self.strides, :]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.extra_channels]])

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (
            batch,
            None if height is None else -(-height // self.strides),
            None if width is None else -(-width // self.strides),
            None if channels is None else channels + self.extra_channels,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "strides": self.strides,
            "extra_channels": self.extra_channels,
        }


def _conv(x, filters, kernel_size, strides, inits, name, use_bias=False, activation=None):
    if strides > 1 and kernel_size > 1:
        # PyTorch pads k//2 on every side; "same" would pad only bottom/right
        # for even inputs and shift the sampling grid by one pixel.
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        activation=activation,
        kernel_initializer=inits.he_normal(),
        name=name,
    )(x)


def _bn(x, name):
    return layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name)(x)


# Logits in float32 under mixed precision, so the loss is not computed in half.
_LOGITS_DTYPE = "float32"


def _relu(x, name):
    return layers.ReLU(name=name)(x)


def _head(x, num_classes, inits):
    """The ResNets' classifier. Its bias starts as nn.Linear's does in the
    PyTorch CIFAR ResNets the paper ran, not at Keras' zero: LARS with the
    pytorch-lars semantics never moves a variable whose norm is zero."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return layers.Dense(
        num_classes,
        kernel_initializer=inits.glorot_uniform(),
        bias_initializer=inits.pytorch_linear_bias(fan_in=x.shape[-1]),
        name="logits",
        dtype=_LOGITS_DTYPE,
    )(x)


def _basic_block(x, filters, strides, shortcut, inits, name):
    y = _conv(x, filters, 3, strides, inits, f"{name}_conv1")
    y = _relu(_bn(y, f"{name}_bn1"), f"{name}_relu1")
    y = _conv(y, filters, 3, 1, inits, f"{name}_conv2")
    y = _bn(y, f"{name}_bn2")
    y = layers.Add(name=f"{name}_add")([y, shortcut(x, filters, strides)])
    return _relu(y, f"{name}_out")


def _bottleneck_block(x, filters, strides, shortcut, inits, name):
    y = _conv(x, filters, 1, 1, inits, f"{name}_conv1")
    y = _relu(_bn(y, f"{name}_bn1"), f"{name}_relu1")
    y = _conv(y, filters, 3, strides, inits, f"{name}_conv2")
    y = _relu(_bn(y, f"{name}_bn2"), f"{name}_relu2")
    y = _conv(y, 4 * filters, 1, 1, inits, f"{name}_conv3")
    y = _bn(y, f"{name}_bn3")
    y = layers.Add(name=f"{name}_add")([y, shortcut(x, 4 * filters, strides)])
    return _relu(y, f"{name}_out")


def _option_a_shortcut(name):
    def shortcut(x, filters, strides):
        extra = filters - x.shape[-1]
        if strides == 1 and extra == 0:
            return x
        return OptionAShortcut(strides, extra, name=f"{name}_shortcut")(x)

    return shortcut


def _projection_shortcut(inits, name):
    def shortcut(x, filters, strides):
        if strides == 1 and x.shape[-1] == filters:
            return x
        x = _conv(x, filters, 1, strides, inits, f"{name}_proj_conv")
        return _bn(x, f"{name}_proj_bn")

    return shortcut


def _cifar_resnet(inputs, depth, num_classes, inits):
    blocks_per_stage = (depth - 2) // 6
    x = _conv(inputs, 16, 3, 1, inits, "conv1")
    x = _relu(_bn(x, "bn1"), "relu1")
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, blocks_per_stage + 1):
            name = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            shortcut = _option_a_shortcut(name)
            x = _basic_block(x, filters, strides, shortcut, inits, name)
    return _head(x, num_classes, inits)


def _imagenet_resnet(inputs, block_type, blocks, num_classes, inits):
    block_fn = _basic_block if block_type == "basic" else _bottleneck_block
    x = _conv(inputs, 64, 7, 2, inits, "conv1")
    x = _relu(_bn(x, "bn1"), "relu1")
    # Zero padding equals PyTorch's -inf padding here because x >= 0 after ReLU.
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for stage, num_blocks in enumerate(blocks, start=1):
        filters = 64 * 2 ** (stage - 1)
        for block in range(1, num_blocks + 1):
            name = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            shortcut = _projection_shortcut(inits, name)
            x = block_fn(x, filters, strides, shortcut, inits, name)
    return _head(x, num_classes, inits)


def _twoconv(inputs, num_classes, inits):
    x = inputs
    for index, filters in enumerate((32, 64), start=1):
        x = _conv(x, filters, 5, 1, inits, f"conv{index}", use_bias=True, activation="relu")
        x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, activation="relu", kernel_initializer=inits.he_normal(), name="fc1")(x)
    return layers.Dense(num_classes, kernel_initializer=inits.glorot_uniform(), name="logits", dtype=_LOGITS_DTYPE)(x)


def build_model(name, num_classes, input_shape, seed=None):
    """Builds the functional model `name` mapping images to `num_classes` logits.

    `seed` (an int) makes every kernel initialization reproducible on a given
    backend; with None the weights come from Keras' global random state.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    inits = _Initializers(seed)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    if name in _CIFAR_DEPTHS:
        outputs = _cifar_resnet(inputs, _CIFAR_DEPTHS[name], num_classes, inits)
    elif name in _IMAGENET_LAYOUTS:
        block_type, blocks = _IMAGENET_LAYOUTS[name]
        outputs = _imagenet_resnet(inputs, block_type, blocks, num_classes, inits)
    else:
        outputs = _twoconv(inputs, num_classes, inits)
    return keras.Model(inputs, outputs, name=name)


def has_batchnorm(model):
    """Whether `model`, or a model nested in it, has a BatchNormalization layer."""
    return any(
        isinstance(layer, layers.BatchNormalization) or (isinstance(layer, keras.Model) and has_batchnorm(layer))
        for layer in model.layers
    )
