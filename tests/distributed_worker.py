"""Trains a small model under a tf.distribute strategy and saves its weights.

Run as a subprocess by the tests, since logical devices and TF_CONFIG must be
set before TensorFlow starts:

    python -m tests.distributed_worker MODE OUT.npz [MICRO_BATCH]

MODE: `one` (one device), `two` (MirroredStrategy over two logical CPUs),
`worker` (MultiWorkerMirroredStrategy, TF_CONFIG from the environment).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

GLOBAL_BATCH = 64
STEPS = 6


def strategy_for(mode):
    if mode == "two":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    if mode == "worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.OneDeviceStrategy("/cpu:0")


def main(mode, out, micro_batch_size=0, optimizer_name="sngm"):
    strategy = strategy_for(mode)
    import keras

    keras.config.disable_traceback_filtering()

    import sngm_keras
    from sngm_keras.accumulation import MicroBatchModel
    from sngm_keras.schedules import PolynomialWarmup

    rng = np.random.default_rng(0)
    x = rng.normal(size=(GLOBAL_BATCH * STEPS, 8)).astype("float32")
    y = rng.integers(0, 3, size=GLOBAL_BATCH * STEPS).astype("int32")
    optimizers = {
        "sngm": lambda: sngm_keras.SNGM(PolynomialWarmup(0.5, STEPS + 2, power=1.1), weight_decay=1e-3),
        "lars": lambda: sngm_keras.LARS(
            PolynomialWarmup(2.0, STEPS + 2, power=1.1), weight_decay=1e-3, trust_coefficient=0.02
        ),
        "sgd": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    }
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(3)])
        if micro_batch_size:
            model = MicroBatchModel(model, micro_batch_size)
        model.compile(
            optimizer=optimizers[optimizer_name](),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    history = model.fit(ds.with_options(options), epochs=1, verbose=0).history
    from sngm_keras.noise_scale import NOISE_SCALE_KEYS

    np.savez(
        out,
        *model.get_weights(),
        iterations=int(model.optimizer.iterations.numpy()),
        replicas=strategy.num_replicas_in_sync,
        loss=np.ravel(history["loss"]),
        noise_scale=[float(np.ravel(history[k])[-1]) for k in NOISE_SCALE_KEYS if k in history],
    )


if __name__ == "__main__":
    main(
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]) if len(sys.argv) > 3 else 0,
        sys.argv[4] if len(sys.argv) > 4 else "sngm",
    )
