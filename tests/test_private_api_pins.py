"""Pins on what the library takes from Keras and JAX without a public promise.

Each dependence is named, with why no public API serves, by one comment at
its place; the tests here fail when Keras or JAX stop honouring it, instead
of letting training silently go wrong:

- `MicroBatchModel._maybe_symbolic_build` (sngm_keras/accumulation.py):
  Keras still calls it from `fit`, and with the iterator;
- `keras.src.losses.loss.unscale_loss_for_distribution` and
  `Model._loss_tracker` (sngm_keras/_accumulation_tf.py): the loss fit
  reports under two replicas is the loss of one;
- `Model._update_metrics_variables` (sngm_keras/_accumulation_jax.py): on
  JAX the loss and accuracy fit reports are those of Keras' own step;
- JAX's refusal of a changed `jax_num_cpu_devices` once started
  (`sngm_keras.training.devices.jax_started`): it tells a started JAX;
- the optimizer hooks `_clip_gradients`, `_apply_weight_decay` and
  `_backend_update_step` (sngm_keras/optimizers/base.py): Keras' `apply`
  still calls them, in that order, and TensorFlow still has the
  `maybe_merge_call` through which the base, like Keras, assigns the step
  under a strategy (the runs on two replicas in tests/test_whole_gradient.py
  and tests/test_accumulation.py use it).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

import sngm_keras
from sngm_keras import _accumulation_tf
from sngm_keras.accumulation import MicroBatchModel
from sngm_keras.optimizers.base import ReducedGradientOptimizer
from tests.helpers import ROOT, data, dense_model, finish, load, run_worker


def test_fit_builds_through_the_symbolic_build_override(monkeypatch):
    calls = []
    real = _accumulation_tf.first_local_batch

    def spy(strategy, iterator):
        calls.append(iterator)
        return real(strategy, iterator)

    monkeypatch.setattr(_accumulation_tf, "first_local_batch", spy)
    model = MicroBatchModel(dense_model(), micro_batch_size=8)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x, y = data(64)
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True), epochs=1, verbose=0)
    assert len(calls) == 1 and calls[0] is not None, "Keras' fit no longer builds through _maybe_symbolic_build"


def test_loss_under_two_replicas_is_the_loss_of_one(tmp_path):
    finish(run_worker("one", tmp_path / "one.npz", micro=0, optimizer="sgd"))
    finish(run_worker("two", tmp_path / "two.npz", micro=8, optimizer="sgd"))
    assert load(tmp_path / "two.npz")[2] == 2
    one, two = np.load(tmp_path / "one.npz")["loss"], np.load(tmp_path / "two.npz")["loss"]
    np.testing.assert_allclose(two, one, rtol=1e-5)


JAX_CHECKS = """
import json, sys
from sngm_keras.training.devices import jax_started
before = jax_started()
import jax, keras, numpy as np
from sngm_keras.accumulation import MicroBatchModel
from tests.helpers import data, dense_model
jax.devices()
out = {"started_before": before, "started_after": jax_started()}
x, y = data(64)
for name, micro in (("plain", None), ("micro", 8)):
    model = dense_model()
    if micro:
        model = MicroBatchModel(model, micro_batch_size=micro)
    model.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
    out[name] = {k: [float(v) for v in history[k]] for k in ("loss", "accuracy")}
print("RESULT", json.dumps(out))
"""


def test_jax_step_metrics_and_jax_start():
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, "-c", JAX_CHECKS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT ") :])
    assert out["started_before"] is False and out["started_after"] is True
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(out["micro"][key], out["plain"][key], rtol=1e-5, err_msg=key)


def test_keras_applies_through_the_backend_update_step(monkeypatch):
    order = []

    def spying(name):
        original = getattr(ReducedGradientOptimizer, name)

        def spy(self, *args):
            order.append(name)
            return original(self, *args)

        return spy

    for name in ("_clip_gradients", "_apply_weight_decay", "_backend_update_step"):
        monkeypatch.setattr(ReducedGradientOptimizer, name, spying(name))
    optimizer = sngm_keras.SNGM(0.1, momentum=0.9)
    weight = keras.Variable(np.ones(3, "float32"))
    optimizer.apply([keras.ops.ones(3)], [weight])
    assert order == ["_clip_gradients", "_apply_weight_decay", "_backend_update_step"]
    np.testing.assert_allclose(weight.numpy(), 1 - 0.1 / np.sqrt(3), rtol=1e-6)  # one step of ||g|| = sqrt(3)
    assert callable(tf.__internal__.distribute.interim.maybe_merge_call)
