"""Tests for sngm_keras.models: parameter counts, shapes, seeding, shortcuts."""

import functools
import importlib.util
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import sngm_keras
from sngm_keras.models import MODEL_NAMES, build_model, has_batchnorm

ROOT = pathlib.Path(__file__).resolve().parents[1]
CIFAR_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}
IMAGENET = ("resnet18", "resnet34", "resnet50")
# He et al. 2016, Table 6 (CIFAR-10), in millions.
PAPER_CIFAR_MILLIONS = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85, "resnet110": 1.7}
# sum(p.numel() for p in torchvision.models.resnetXX().parameters())
TORCHVISION_COUNTS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}


@functools.cache
def built(name, num_classes=10, input_shape=(32, 32, 3), seed=None):
    return build_model(name, num_classes, input_shape, seed=seed)


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def layers_of(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


def cifar_resnet_count(depth, num_classes, in_channels=3):
    """3x3 conv weights (no bias) + BN gamma/beta + dense; option A adds nothing."""

    def conv_bn(cin, cout):
        return 3 * 3 * cin * cout + 2 * cout

    total = conv_bn(in_channels, 16)
    cin = 16
    for filters in (16, 32, 64):
        for _ in range((depth - 2) // 6):
            total += conv_bn(cin, filters) + conv_bn(filters, filters)
            cin = filters
    return total + cin * num_classes + num_classes


def twoconv_count(height, width, channels, num_classes):
    flat = (height // 4) * (width // 4) * 64
    return (
        (5 * 5 * channels * 32 + 32) + (5 * 5 * 32 * 64 + 64) + (flat * 256 + 256) + (256 * num_classes + num_classes)
    )


@pytest.mark.parametrize("name", list(CIFAR_DEPTHS))
def test_cifar_resnet_parameter_count(name):
    count = trainable_count(built(name))
    assert count == cifar_resnet_count(CIFAR_DEPTHS[name], 10)
    digits = 1 if name == "resnet110" else 2
    assert round(count / 1e6, digits) == PAPER_CIFAR_MILLIONS[name]


def test_cifar_resnet_count_formula_matches_known_value():
    # Guards the formula itself: resnet20's count as reported for the
    # reference PyTorch implementations of the paper's CIFAR model.
    assert cifar_resnet_count(20, 10) == 269_722


@pytest.fixture(scope="module")
def imagenet_models():
    return {name: build_model(name, 1000, (224, 224, 3)) for name in IMAGENET}


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_resnet_parameter_count(imagenet_models, name):
    model = imagenet_models[name]
    assert trainable_count(model) == TORCHVISION_COUNTS[name]
    # Only the BN moving statistics are non-trainable.
    bn_channels = sum(bn.gamma.shape[0] for bn in layers_of(model, keras.layers.BatchNormalization))
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert non_trainable == 2 * bn_channels


@pytest.mark.parametrize(
    "name,projections,convs",
    [
        ("resnet18", 3, 1 + 16 + 3),
        ("resnet34", 3, 1 + 32 + 3),
        ("resnet50", 4, 1 + 48 + 4),
    ],
)
def test_imagenet_resnet_projection_shortcuts(imagenet_models, name, projections, convs):
    model = imagenet_models[name]
    conv_layers = layers_of(model, keras.layers.Conv2D)
    assert len(conv_layers) == convs
    assert sum("proj" in layer.name for layer in conv_layers) == projections
    assert model.output_shape == (None, 1000)


def test_twoconv_parameter_count():
    assert trainable_count(built("twoconv")) == twoconv_count(32, 32, 3, 10)
    mnist = build_model("twoconv", 10, (28, 28, 1))
    assert trainable_count(mnist) == twoconv_count(28, 28, 1, 10)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_and_logits(name):
    model = built(name)
    assert model.name == name
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    logits = keras.ops.convert_to_numpy(model(images, training=False))
    assert logits.shape == (2, 10)
    assert np.all(np.isfinite(logits))
    # Logits, not probabilities.
    assert model.layers[-1].activation is keras.activations.linear


@pytest.mark.parametrize(
    "name,num_classes,input_shape",
    [
        ("resnet18", 100, (64, 64, 3)),
        ("resnet50", 7, (16, 16, 3)),
        ("resnet20", 5, (33, 33, 3)),  # odd size: shortcut and conv must agree
        ("twoconv", 10, (28, 28, 1)),
    ],
)
def test_other_input_shapes(name, num_classes, input_shape):
    model = build_model(name, num_classes, input_shape)
    logits = model(np.zeros((2, *input_shape), "float32"), training=False)
    assert tuple(logits.shape) == (2, num_classes)


def _weights(model):
    return model.get_weights()


def test_same_seed_gives_identical_weights():
    first = _weights(built("resnet20", seed=123))
    second = _weights(build_model("resnet20", 10, (32, 32, 3), seed=123))
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_different_seeds_give_different_weights():
    first = built("resnet20", seed=123)
    second = built("resnet20", seed=124)
    kernels = [(a, b) for a, b in zip(first.trainable_weights, second.trainable_weights) if "kernel" in a.path]
    assert len(kernels) == CIFAR_DEPTHS["resnet20"]  # 19 convolutions and the classifier
    for a, b in kernels:
        assert not np.array_equal(a.numpy(), b.numpy()), a.path


def test_seeded_layers_are_not_initialized_alike():
    model = built("resnet20", seed=123)
    kernels = [
        layer.kernel.numpy() for layer in layers_of(model, keras.layers.Conv2D) if layer.kernel.shape == (3, 3, 16, 16)
    ]
    assert len(kernels) == 6
    for i in range(len(kernels)):
        for j in range(i + 1, len(kernels)):
            assert not np.array_equal(kernels[i], kernels[j])


@pytest.mark.parametrize("name, fan_in", [("resnet20", 64), ("resnet18", 512)])
def test_the_resnet_classifier_bias_starts_as_pytorch_linear_does(name, fan_in):
    bound = 1 / np.sqrt(fan_in)
    bias = built(name, seed=123).get_layer("logits").bias.numpy()
    assert bias.shape == (10,) and np.all(bias != 0)
    assert np.max(np.abs(bias)) <= bound and np.max(np.abs(bias)) > bound / 2
    np.testing.assert_array_equal(build_model(name, 10, (32, 32, 3), seed=123).get_layer("logits").bias.numpy(), bias)
    assert not np.array_equal(built(name, seed=124).get_layer("logits").bias.numpy(), bias)


def test_pytorch_lars_moves_the_resnet_classifier_bias():
    bias = build_model("resnet20", 10, (32, 32, 3), seed=123).get_layer("logits").bias
    start = bias.numpy()
    gradient = np.linspace(-1, 1, 10).astype("float32")
    lars = sngm_keras.LARS(learning_rate=0.5, momentum=0.9, trust_coefficient=0.01, pytorch_lars=True)
    lars.apply([keras.ops.convert_to_tensor(gradient)], [bias])
    # One step from zero momentum: learning_rate * trust_coefficient * ||w|| * g / ||g||.
    step = 0.5 * 0.01 * np.linalg.norm(start) * gradient / np.linalg.norm(gradient)
    np.testing.assert_allclose(bias.numpy(), start - step, rtol=1e-5, atol=1e-7)
    assert np.max(np.abs(step)) > 1e-4


def test_twoconv_seeding():
    a = _weights(build_model("twoconv", 10, (28, 28, 1), seed=5))
    b = _weights(build_model("twoconv", 10, (28, 28, 1), seed=5))
    c = _weights(build_model("twoconv", 10, (28, 28, 1), seed=6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_resnet20_uses_option_a_shortcuts():
    model = built("resnet20")
    weighted = [layer for layer in model.layers if layer.weights]
    convs = layers_of(model, keras.layers.Conv2D)
    dense = layers_of(model, keras.layers.Dense)
    assert len(convs) == 19 and len(dense) == 1
    assert all(layer.kernel_size == (3, 3) and not layer.use_bias for layer in convs)
    others = [
        layer
        for layer in weighted
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense, keras.layers.BatchNormalization))
    ]
    assert others == []


@pytest.mark.parametrize("name", list(CIFAR_DEPTHS))
def test_cifar_resnets_have_depth_minus_one_convs(name):
    convs = layers_of(built(name), keras.layers.Conv2D)
    assert len(convs) == CIFAR_DEPTHS[name] - 1
    assert all(layer.kernel_size == (3, 3) for layer in convs)


def test_option_a_shortcut_subsamples_and_zero_pads():
    model = built("resnet20")
    layer = model.get_layer("stage2_block1_shortcut")
    x = np.arange(2 * 4 * 4 * 16, dtype="float32").reshape(2, 4, 4, 16)
    y = keras.ops.convert_to_numpy(layer(x))
    assert y.shape == (2, 2, 2, 32)
    np.testing.assert_array_equal(y[..., :16], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., 16:], 0.0)


def test_batchnorm_settings():
    for name in ("resnet20", "resnet18"):
        for bn in layers_of(built(name), keras.layers.BatchNormalization):
            assert bn.momentum == 0.9 and bn.epsilon == 1e-5


def test_has_batchnorm():
    assert not has_batchnorm(built("twoconv"))
    for name in ("resnet20", "resnet110", "resnet18", "resnet50"):
        assert has_batchnorm(built(name))
    wrapper = keras.Sequential([keras.Input((32, 32, 3)), built("resnet20")])
    assert has_batchnorm(wrapper)


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="resnet99") as info:
        build_model("resnet99", 10, (32, 32, 3))
    assert "resnet20" in str(info.value) and "twoconv" in str(info.value)


def test_save_and_load_round_trip(tmp_path):
    model = built("resnet20", seed=1)
    path = tmp_path / "resnet20.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    images = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images, training=False)),
        keras.ops.convert_to_numpy(model(images, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_resnet20_builds_under_jax():
    code = (
        "import numpy as np, keras\n"
        "from sngm_keras.models import build_model\n"
        "m = build_model('resnet20', 10, (32, 32, 3), seed=0)\n"
        "y = m(np.zeros((2, 32, 32, 3), 'float32'), training=False)\n"
        "n = sum(int(np.prod(w.shape)) for w in m.trainable_weights)\n"
        "print(keras.backend.backend(), n, tuple(y.shape))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line == f"jax {cifar_resnet_count(20, 10)} (2, 10)"
