"""The step whose batch size is known only as it runs, against the static one.

`apps.train` keeps each epoch's last, smaller batch of whole micro-batches
(`epoch_multiple`), so the app's large-batch step is traced with an unknown
batch dimension wherever B does not divide the epoch (Table 2: 44,928 of
45,000 images, ten steps of 4096 and one of 3,968). This times that step
against the same step traced with a static batch, ResNet-20, SNGM, B = 4096
as 32 micro-batches of 128, both fed full batches of the app's tf.data
pipeline through `fit`, alternating in one process; the ratio is the median
of per-round ratios.

    python -m benchmarks.bench_batch_shape --dataset=cifar10 --data_dir=DIR --output=bench_batch_shape.json
"""

import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags

from apps._cli import fail, run
from benchmarks._common import define_batch_flags, results_header

FLAGS = flags.FLAGS
define_batch_flags()
flags.DEFINE_integer("updates", 2, "Updates per timed round.", lower_bound=1)
flags.DEFINE_integer("repeats", 5, "Timed rounds (medians reported).", lower_bound=1)
flags.DEFINE_string("output", "bench_batch_shape.json", "JSON results.")


def main():
    import keras
    import tensorflow as tf

    from sngm_keras.accumulation import MicroBatchModel
    from sngm_keras.data import make_datasets, steps_per_epoch
    from sngm_keras.models import build_model
    from sngm_keras.training import TrainConfig
    from sngm_keras.training.factory import compile_for_training

    b, big = FLAGS.micro_batch_size, FLAGS.batch_size
    if big % b:
        fail(f"--batch_size={big} is not a multiple of --micro_batch_size={b}")
    config = TrainConfig(dataset=FLAGS.dataset, model=FLAGS.model, optimizer="sngm", weight_decay=1e-4)
    train_ds, _, info = make_datasets(FLAGS.dataset, data_dir=FLAGS.data_dir, batch_size=big, seed=0, num_epochs=1)
    full = train_ds.take(FLAGS.updates).cache()  # the same full batches for both, made once
    # Re-batched without drop_remainder: a batch dimension of None, the same batches.
    shapes = {"static": full, "unknown": full.unbatch().batch(big).cache()}
    for ds in shapes.values():
        list(ds)  # fills the caches before anything is timed
    models = {}
    for key, ds in shapes.items():
        net = build_model(FLAGS.model, info.num_classes, info.image_shape, seed=0)
        models[key] = compile_for_training(MicroBatchModel(net, b), config, steps_per_epoch(info, big))
        models[key].fit(ds.take(1), epochs=1, verbose=0)  # trace and warm up
    assert shapes["unknown"].element_spec[0].shape[0] is None and shapes["static"].element_spec[0].shape[0] == big
    times = {key: [] for key in models}
    for repeat in range(FLAGS.repeats):
        for key in list(models)[:: 1 if repeat % 2 == 0 else -1]:
            start = time.perf_counter()
            models[key].fit(shapes[key], epochs=1, verbose=0)
            times[key].append(time.perf_counter() - start)
    per_round = [t_static / t_unknown for t_static, t_unknown in zip(times["static"], times["unknown"])]
    examples = FLAGS.updates * big
    results = {
        **results_header(keras=keras.__version__, tensorflow=tf.__version__),
        "examples_per_second": {key: examples / statistics.median(t) for key, t in times.items()},
        "unknown_over_static": statistics.median(per_round),
        "per_round": [round(r, 4) for r in per_round],
    }
    print(
        f"B={big} as {big // b}x{b}: static {results['examples_per_second']['static']:.1f} examples/s, "
        f"batch size known only as the step runs {results['examples_per_second']['unknown']:.1f}: "
        f"{results['unknown_over_static']:.3f}x (per round {results['per_round']})"
    )
    with open(FLAGS.output, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    run(main)
