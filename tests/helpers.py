"""Helpers shared by the test modules: the small dense model and its data,
the distributed worker's subprocess, comparisons. Test modules import these
from here, never from each other. No TensorFlow import: the JAX workers
(`python -m tests.test_accumulation_jax`, the JAX scripts) import it too."""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np

import sngm_keras
from sngm_keras.schedules import PolynomialWarmup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dense_model(batchnorm=False, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((8,))]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization(momentum=0.9))
    layers += [keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(3)]
    return keras.Sequential(layers)


def data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(loc=0.5, size=(n, 8)).astype("float32"), rng.integers(0, 3, size=n).astype("int32")


def max_diff(a, b):
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(a, b))


def sngm():
    return sngm_keras.SNGM(PolynomialWarmup(0.5, 10, power=1.1), weight_decay=1e-3)


def run_worker(mode, out, micro=8, optimizer="sngm", env=None):
    """`python -m tests.distributed_worker MODE OUT MICRO OPTIMIZER`, started."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.distributed_worker", mode, str(out), str(micro), optimizer],
        cwd=ROOT,
        env=dict(os.environ, **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process, timeout=240):
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-3000:]


def load(path):
    """A worker's (weights, iterations, replicas)."""
    saved = np.load(path)
    weights = [saved[f"arr_{i}"] for i in range(4)]
    return weights, int(saved["iterations"]), int(saved["replicas"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_alone(backend, *args):
    """`python -m tests.interrupted_runs ARGS` in a process of its own on `backend`; its JSON lines."""
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "tests.interrupted_runs", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
