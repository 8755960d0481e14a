"""A batch that grows with the measured gradient noise scale: the rule
(sngm_keras.batch_growth), the schedule counted in examples and the fit
loop (sngm_keras.batch_growth_fit) a model.fit user runs."""

import keras
import numpy as np
import pytest

import sngm_keras
from sngm_keras.accumulation import MicroBatchModel
from sngm_keras.batch_growth import (
    describe_batch_sizes,
    examples_after,
    grown_batch_size,
    largest_batch_size,
    lr_factor,
)
from sngm_keras.batch_growth_fit import BatchGrowth, ExampleCountedSchedule, fit_with_batch_growth
from sngm_keras.data import examples_after as fixed_examples_after
from sngm_keras.schedules import PolynomialWarmup, step_decay

# The least-squares problem of tests/test_noise_scale.py, whose B_simple is
# (d + 1) + d s2 / |delta|^2 = 17 + 16 / |delta|^2 (d = 16, s2 = 1).
D = 16
DELTA = np.full(D, 0.25)  # |delta|^2 = 1


def closed_form_noise_scale(sq_delta):
    return ((D + 1) * sq_delta + D) / sq_delta


def test_rounding_down_to_a_power_of_two_multiple_and_clamping():
    grow = lambda current, scale, **kw: grown_batch_size(
        current, scale, **{"multiple": 128, "start": 128, "maximum": 4096, **kw}
    )
    assert [grow(128, s) for s in (1.0, 127.9, 255.9, 256.0, 700.0, 1023.0, 1024.0)] == [
        128,
        128,
        128,
        256,
        512,
        512,
        1024,
    ]
    assert grow(128, 10**6) == 4096 and grow(128, 5000.0) == 4096  # the maximum
    assert grow(1024, 300.0) == 1024  # never smaller than the current batch
    assert grow(256, 600.0, factor=2.0) == 1024 and grow(256, 600.0, factor=0.25) == 256
    # No measure, or none usable: the batch stays.
    assert [grow(512, s) for s in (None, float("inf"), float("nan"), 0.0, -3.0)] == [512] * 5
    # A start or maximum that is not a power-of-two multiple: the clamp holds them.
    assert grown_batch_size(500, 700.0, multiple=100, start=500, maximum=3000) == 500  # 400, below the start
    assert grown_batch_size(500, 900.0, multiple=100, start=500, maximum=3000) == 800
    assert grown_batch_size(500, 5000.0, multiple=100, start=500, maximum=3000) == 3000
    assert largest_batch_size(44928, 128) == 32768 and largest_batch_size(100, 128) == 128


def test_lr_factor_and_the_described_batches():
    assert [lr_factor(4096, 128, s) for s in ("none", "sqrt", "linear")] == [1.0, pytest.approx(32**0.5), 32.0]
    assert describe_batch_sizes([128, 128, 256, 1024, 1024]) == "128 (epochs 1-2), 256 (epoch 3), 1024 (epochs 4-5)"
    assert describe_batch_sizes([128, 128, 256], epochs_done=2) == "128 (epochs 1-2)"


def test_growth_from_a_known_noise_scale_sequence():
    """|delta|^2 halving every epoch: B_simple 33, 49, 81, 145, 273, 529, 1041;
    micro-batches of 16, the batch from 16 to at most 512."""
    scales = [closed_form_noise_scale(1 / 2**e) for e in range(7)]
    assert scales == [33, 49, 81, 145, 273, 529, 1041]
    growth = BatchGrowth(start=16, maximum=512, multiple=16, examples_per_epoch=4096)
    for epoch, scale in enumerate(scales):
        growth.grow(epoch, scale)
    assert growth.epoch_batch_sizes == [16, 32, 32, 64, 128, 256, 512, 512]
    doubled = BatchGrowth(start=16, maximum=512, multiple=16, examples_per_epoch=4096, factor=2.0)
    for epoch, scale in enumerate(scales):
        doubled.grow(epoch, scale)
    assert doubled.epoch_batch_sizes == [16, 64, 64, 128, 256, 512, 512, 512]


def test_examples_per_epoch_are_the_same_at_every_batch():
    # CIFAR-10 less 5,000 held out: 45,000 images, micro-batches of 128.
    epoch = 44928
    sizes = [128, 256, 1024, 4096]
    steps = [351, 176, 44, 11]
    assert [growth_steps(epoch, b) for b in sizes] == steps
    ends = np.cumsum(steps)
    assert [examples_after(int(u), sizes, epoch) for u in ends] == [epoch * (i + 1) for i in range(4)]
    assert examples_after(351 + 10, sizes, epoch) == epoch + 10 * 256
    assert examples_after(ends[-1] + 5, sizes, epoch) == 4 * epoch + 5 * 4096  # past the list: its last batch
    # One batch throughout: what a run without growth counts.
    assert all(examples_after(u, [256], epoch) == fixed_examples_after(u, 256, epoch) for u in range(0, 900, 7))


def growth_steps(examples, batch_size):
    return BatchGrowth(128, 4096, 128, examples).steps_per_epoch(batch_size)


@pytest.mark.parametrize("base", ["poly", "step"])
def test_the_schedule_counts_in_examples(base):
    """Epochs of 4,096 examples: 32 updates at B = 128, 4 at B = 1024. At
    B0 it is the base schedule itself; after growing, update i of an epoch
    reads the base at the updates of B0 that start at the same example."""
    steps0, epochs = 32, 4
    schedule = (
        PolynomialWarmup(1.0, total_steps=epochs * steps0, power=1.1)
        if base == "poly"
        else step_decay(1.0, steps0, [2, 3])
    )
    counted = ExampleCountedSchedule(schedule, 128, steps0)
    for u in (0, 1, 31, 32, 63, 64, 100):
        assert float(counted(u)) == float(schedule(u))
    # Epochs 2 and 3 at B = 1024 (from update 64), the rate doubled.
    counted.set_stretch(2, 64, 1024, 4, 2.0)
    for u, base_update in ((64, 64), (65, 72), (67, 88), (68, 96), (71, 120)):
        assert float(counted(u)) == pytest.approx(2.0 * float(schedule(base_update)))
    # Epoch 3 starts at its decay, whatever the batch (the step schedule divides by 10 there).
    if base == "step":
        assert float(counted(68)) == pytest.approx(2.0 * 0.01) and float(counted(67)) == pytest.approx(2.0 * 0.1)


class StepsOfEachEpoch(keras.callbacks.Callback):
    """Counts each epoch's updates, and keeps the noise scale in its logs."""

    def __init__(self):
        super().__init__()
        self.steps, self.logged = {}, []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.steps[self._epoch] = self.steps.get(self._epoch, 0) + 1

    def on_epoch_end(self, epoch, logs=None):
        self.logged.append((logs["batch_size"], float(logs["gradient_noise_scale"])))


def test_fit_grows_the_batch_and_every_epoch_trains_on_the_same_examples(monkeypatch):
    """Noise scales given at each epoch's end (the model's own measure is
    read, and kept beside them): from B = 16 in micro-batches of 8, at most 128."""
    import tensorflow as tf

    from sngm_keras import batch_growth_fit

    scripted, read = [45.0, 40.0, 90.0, 181.0, 1e6], []

    def noise_scale_of(model):
        read.append(batch_growth_fit.noise_scale_of.__wrapped__(model))
        return scripted[len(read) - 1]

    noise_scale_of.__wrapped__ = batch_growth_fit.noise_scale_of
    monkeypatch.setattr(batch_growth_fit, "noise_scale_of", noise_scale_of)
    rng = np.random.default_rng(0)
    epoch_examples = 1024
    x = rng.normal(size=(epoch_examples, D)).astype("float32")
    y = rng.normal(size=(epoch_examples, 1)).astype("float32")
    net = keras.Sequential([keras.Input((D,)), keras.layers.Dense(1, use_bias=False)])
    model = MicroBatchModel(net, 8)
    growth = BatchGrowth(start=16, maximum=128, multiple=8, examples_per_epoch=epoch_examples, lr_scaling="sqrt")
    schedule = growth.schedule(PolynomialWarmup(0.01, total_steps=5 * 64))
    model.compile(optimizer=sngm_keras.SNGM(schedule), loss="mse")
    asked, counts = [], StepsOfEachEpoch()
    traced_at = []  # the batch of each trace of the train step (its Python runs once per trace)
    step = model.train_step
    model.train_step = lambda data: traced_at.append(int(data[0].shape[0])) or step(data)

    def train_data(batch_size, epoch, batch):
        asked.append((batch_size, epoch, batch))
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True).repeat()

    fit_with_batch_growth(model, train_data, growth, 5, callbacks=[counts], verbose=0)
    assert growth.epoch_batch_sizes == [16, 32, 32, 64, 128, 128]
    assert asked == [(16, 0, 0), (32, 1, 0), (64, 3, 0), (128, 4, 0)]
    assert [counts.steps[e] * growth.batch_size_at(e) for e in range(5)] == [epoch_examples] * 5
    assert [b for b, _ in counts.logged] == [16, 32, 32, 64, 128]
    assert [s for _, s in counts.logged] == read and all(s > 0 for s in read)
    # The last stretch's rate: epoch 4 at B = 128, sqrt(128 / 16) times the base.
    assert (schedule.first_epoch, schedule.first_update, schedule.batch_size) == (4, 64 + 32 + 32 + 16, 128)
    assert schedule.factor == pytest.approx(8**0.5)
    assert int(model.optimizer.iterations) == 64 + 32 + 32 + 16 + 8
    # One trace per distinct batch, none for the second epoch at B = 32; the
    # first batch twice, as the first fit of any MicroBatchModel, grown or not.
    assert traced_at == [16, 16, 32, 64, 128]
