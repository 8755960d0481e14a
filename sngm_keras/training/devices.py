"""Where a run's replicas live: a `tf.distribute` strategy on TensorFlow, a
Keras distribution on JAX, chosen here and nowhere else.

`prepare` does what must happen before the backend starts (logical CPU
devices, JAX's XLA flags); `placed` then chooses the replicas and yields a
`Placement`. --strategy: auto (several devices) or mirrored replicate over
this host's devices (TensorFlow: MirroredStrategy; JAX:
`keras.distribution.DataParallel`), one_device uses the first, and
multi_worker spans every worker's devices: the strategy of the joined
cluster (`sngm_keras.training.cluster`) on TensorFlow, a DataParallel over
every process's devices on JAX (each process feeding its share of every
batch). --deterministic: TensorFlow's op determinism, or
`--xla_gpu_deterministic_ops` for JAX.
"""

import contextlib
import dataclasses
import logging
import os
from typing import Any

from sngm_keras.training.errors import ConfigError

log = logging.getLogger("sngm_keras")


@dataclasses.dataclass(frozen=True)
class Placement:
    """The replicas of a run, on either backend."""

    backend: str
    replicas: int
    strategy: Any = None  # TensorFlow: the tf.distribute strategy
    distribution: Any = None  # JAX: a DataParallel, or None on one device
    share: tuple[int, int] = (0, 1)  # JAX: (this process, processes), each feeding its rows
    tensorflow: bool = True  # TensorFlow importable (TensorBoard logs need it)

    def scope(self):
        """Where the model is built: the strategy's scope on TensorFlow."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


def prepare(config, backend):
    """What must happen before TensorFlow (or JAX) starts: logical CPU devices."""
    if backend == "jax":
        return _prepare_jax(config)
    if backend != "tensorflow" or config.num_cpu_devices <= 1:
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * config.num_cpu_devices
        )
    except RuntimeError:
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing != config.num_cpu_devices:
            raise ConfigError("num_cpu_devices", f"TensorFlow already started with {existing} CPU device(s)") from None


@contextlib.contextmanager
def placed(config, backend, membership=None):
    """Yields the run's `Placement`; on JAX its distribution is Keras' global
    one until the block ends. `membership`: the joined cluster of a
    multi_worker run."""
    if backend == "tensorflow":
        import tensorflow as tf

        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        strategy = make_strategy(config) if membership is None else membership.strategy
        yield Placement(backend, strategy.num_replicas_in_sync, strategy=strategy)
        return
    import jax
    import keras
    import numpy as np

    tensorflow = _hide_accelerators_from_tensorflow()
    distribution = make_distribution(config)
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(distribution)
    try:
        replicas = 1 if distribution is None else int(np.prod(distribution.device_mesh.shape))
        yield Placement(
            backend,
            replicas,
            distribution=distribution,
            share=(jax.process_index(), jax.process_count()),
            tensorflow=tensorflow,
        )
    finally:
        keras.distribution.set_distribution(previous)


def make_strategy(config):
    """The tf.distribute strategy of --strategy on this host's devices."""
    import tensorflow as tf

    if config.strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if config.strategy == "mirrored" or (config.strategy == "auto" and (len(gpus) > 1 or len(cpus) > 1)):
        return tf.distribute.MirroredStrategy(gpus or cpus)
    if config.strategy == "one_device":
        return tf.distribute.OneDeviceStrategy((gpus or cpus)[0])
    return tf.distribute.get_strategy()


def make_distribution(config) -> Any | None:
    """`keras.distribution.DataParallel` over this host's devices, or None for one device.

    auto: all devices of JAX's default platform when there are several;
    mirrored: those devices (or the --num_cpu_devices CPU devices) even if
    just one; one_device: the first device; multi_worker: the devices of
    every process.
    """
    import jax
    import keras

    if config.strategy == "one_device":
        return None
    devices = jax.devices("cpu") if config.num_cpu_devices > 1 else jax.devices()
    if config.strategy == "auto" and len(devices) < 2:
        return None
    # Several processes: each feeds its share of every batch itself (the
    # PyDataset feed's `share`).
    return keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)


def _prepare_jax(config):
    """JAX options that must be set before its backend starts."""
    import jax

    started = jax_started()
    if config.deterministic and "--xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
        if started:
            log.warning(
                "--deterministic: JAX started already; XLA_FLAGS=--xla_gpu_deterministic_ops=true is not applied"
            )
        else:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()
    if config.num_cpu_devices > 1:
        if not started:
            try:
                jax.config.update("jax_num_cpu_devices", config.num_cpu_devices)
            except RuntimeError:  # started after all: the count below tells
                pass
        existing = len(jax.devices("cpu"))
        if existing != config.num_cpu_devices:
            raise ConfigError("num_cpu_devices", f"JAX already started with {existing} CPU device(s)")


def jax_started():
    """Whether JAX's backends have started (they read XLA_FLAGS and the CPU
    device count when they do). JAX has no public question for it; its
    public answer is the RuntimeError of a changed jax_num_cpu_devices once
    started (pinned by tests/test_private_api_pins.py)."""
    import jax

    count = jax.config.jax_num_cpu_devices
    try:
        jax.config.update("jax_num_cpu_devices", count + 1)
    except RuntimeError:
        return True
    jax.config.update("jax_num_cpu_devices", count)
    return False


def _hide_accelerators_from_tensorflow():
    """Imports TensorFlow, when installed, with no GPU (JAX has them); False without it.

    Keras' set_random_seed and TensorBoard import it when it is there, and
    TensorFlow would otherwise reserve the GPUs' memory."""
    try:
        from sngm_keras.data.tf_setup import import_tf

        import_tf()
    except ImportError:
        return False
    return True
