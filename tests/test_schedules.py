"""The paper's schedules as the optimizers apply them, update by update."""

import keras
import numpy as np
import pytest

import sngm_keras
from sngm_keras.schedules import PolynomialWarmup, step_decay


def _rates_applied(schedule, updates):
    """The rate of each update: MSGD without momentum on a loss of slope 1
    moves its weight by exactly the rate."""
    weight = keras.Variable(0.0)
    optimizer = sngm_keras.MSGD(schedule, momentum=0.0)
    moved = []
    for _ in range(updates):
        before = float(weight.numpy())
        optimizer.apply([keras.ops.ones(())], [weight])
        moved.append(before - float(weight.numpy()))
    return moved


def test_step_decay_switches_at_the_first_update_of_its_epoch():
    # 3 updates an epoch, divided by 10 at epochs 2 and 3 (as PyTorch's
    # MultiStepLR stepped per epoch): updates 1-6 at 1, 7-9 at 0.1, then 0.01.
    rates = _rates_applied(step_decay(1.0, steps_per_epoch=3, decay_epochs=(2, 3)), 11)
    np.testing.assert_allclose(rates, [1.0] * 6 + [0.1] * 3 + [0.01] * 2, rtol=1e-4)  # float32 weights


def test_poly_decay_with_warmup_update_by_update():
    schedule = PolynomialWarmup(2.0, total_steps=6, power=2.0, warmup_steps=2, warmup_learning_rate=0.5)
    rates = _rates_applied(schedule, 6)
    # Warm-up from 0.5 over updates 1-2, then 2 (1 - s / 4)^2 for s = 0..3.
    assert rates == pytest.approx([0.5, 1.25, 2.0, 1.125, 0.5, 0.125], rel=1e-6)
