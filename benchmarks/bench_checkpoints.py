"""What checkpoints within epochs cost: training speed with a checkpoint
every N updates against per-epoch checkpoints only, and one checkpoint's
size and write time.

For each --batch_sizes B (micro-batches of --micro_batch_size), the app's
training model (SNGM, ResNet-20) fits --updates updates on the same
batches, once with `EpochRecorder(checkpoint_every=N)` and once without
checkpoints within the epoch, in alternation (new order each round);
reported: the median over rounds of the paired ratio of their times. The
write time is the median of --writes calls of `RunDir.save_checkpoint`.

    python -m benchmarks.bench_checkpoints --batch_sizes=128,4096 --every=10,1 --output=bench_checkpoints.json
"""

import functools
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags

from apps._cli import fail, run

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "resnet20", "Network.")
flags.DEFINE_list("batch_sizes", ["128", "4096"], "Effective batches B to time.")
flags.DEFINE_list("every", ["10", "1"], "N for each of --batch_sizes: a checkpoint every N updates.")
flags.DEFINE_integer("micro_batch_size", 128, "Micro-batch b.", lower_bound=1)
flags.DEFINE_list("updates", ["20", "4"], "Updates per timed fit, for each of --batch_sizes.")
flags.DEFINE_integer("repeats", 5, "Timed rounds (medians reported).", lower_bound=1)
flags.DEFINE_integer("writes", 20, "Checkpoint writes timed alone.", lower_bound=1)
flags.DEFINE_string("output", "bench_checkpoints.json", "JSON results.")


def _ints(name):
    try:
        values = [int(v) for v in getattr(FLAGS, name)]
    except ValueError:
        fail(f"--{name}: whole numbers expected, got {','.join(getattr(FLAGS, name))}")
    if any(v < 1 for v in values) or len(values) != len(FLAGS.batch_sizes):
        fail(f"--{name}: one positive number for each of --batch_sizes ({len(FLAGS.batch_sizes)})")
    return values


def timed_fit(model, data, folder, batch_size, num_train, updates, checkpoint_every):
    """Seconds `updates` updates take with the app's recorder checkpointing
    every `checkpoint_every` within the epoch; the `RunDir` it wrote."""
    from sngm_keras.training.callbacks import EpochRecorder
    from sngm_keras.training.rundir import RunDir

    run_dir = RunDir(os.path.join(folder, f"every{checkpoint_every}"))
    os.makedirs(run_dir.checkpoints, exist_ok=True)
    recorder = EpochRecorder(
        run_dir,
        [],
        lambda u: u * batch_size,
        num_train,
        0.0,
        0.0,
        steps_per_epoch=10**6,  # never an epoch's end: only the checkpoints within it differ
        checkpoint_every=checkpoint_every,
    )
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=updates, epochs=1, callbacks=[recorder], verbose=0, shuffle=False)
    return time.perf_counter() - start, run_dir


def main():
    batch_sizes, every, updates = _ints("batch_sizes"), _ints("every"), _ints("updates")
    for b in batch_sizes:
        if b % FLAGS.micro_batch_size:
            fail(f"--batch_sizes: {b} is not a multiple of --micro_batch_size={FLAGS.micro_batch_size}")
    import keras
    import tensorflow as tf

    from sngm_keras.data import make_datasets
    from sngm_keras.training import TrainConfig
    from sngm_keras.training.devices import Placement
    from sngm_keras.training.factory import build_training_model

    _, _, info = make_datasets("sample", batch_size=FLAGS.micro_batch_size, seed=0, num_epochs=1)
    placement = Placement("tensorflow", 1, strategy=tf.distribute.get_strategy())
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "model": FLAGS.model,
        "micro_batch_size": FLAGS.micro_batch_size,
        "repeats": FLAGS.repeats,
        "runs": [],
    }
    order = random.Random(0)
    for batch_size, n, k in zip(batch_sizes, every, updates):
        config = TrainConfig(
            model=FLAGS.model, dataset="sample", batch_size=batch_size, micro_batch_size=FLAGS.micro_batch_size
        )
        model = build_training_model(config, info, 10**6, FLAGS.micro_batch_size, placement)
        x = tf.random.stateless_uniform((batch_size, *info.image_shape), (0, 1))
        y = tf.random.stateless_uniform((batch_size,), (0, 2), maxval=info.num_classes, dtype=tf.int32)
        data = tf.data.Dataset.from_tensors((x, y)).repeat()
        folder = tempfile.mkdtemp(prefix="bench-checkpoints-")
        fit = functools.partial(timed_fit, model, data, folder, batch_size, info.num_train, k)
        fit(n)  # trace and warm up
        times = {0: [], n: []}
        for _ in range(FLAGS.repeats):
            for key in order.sample(list(times), 2):
                times[key].append(fit(key)[0])
        ratio = statistics.median(p / c for p, c in zip(times[0], times[n]))
        run_dir = fit(n)[1]
        state = {"updates": 1, "epoch": 0, "batch": 1}
        writes = []
        for i in range(FLAGS.writes):
            start = time.perf_counter()
            run_dir.save_checkpoint(model, dict(state, updates=10**6 + i), keep=2)
            writes.append(time.perf_counter() - start)
        size = os.path.getsize(os.path.join(run_dir.checkpoints, f"update-{10**6 + FLAGS.writes - 1:09d}.weights.h5"))
        row = {
            "batch_size": batch_size,
            "checkpoint_every": n,
            "updates_per_fit": k,
            "seconds_per_update": statistics.median(times[0]) / k,
            "speed_ratio_every_n_over_per_epoch": ratio,
            "fit_seconds_per_epoch_only": times[0],
            "fit_seconds_every_n": times[n],
            "checkpoint_bytes": size,
            "checkpoint_write_seconds": statistics.median(writes),
        }
        shutil.rmtree(folder)
        results["runs"].append(row)
        print(
            f"B={batch_size}: {row['seconds_per_update']:.3f} s/update; a checkpoint every {n} update(s) trains at "
            f"{ratio:.3f}x the speed of per-epoch only; one checkpoint {size / 1e6:.2f} MB in "
            f"{row['checkpoint_write_seconds'] * 1000:.0f} ms"
        )
    with open(FLAGS.output, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    run(main)
