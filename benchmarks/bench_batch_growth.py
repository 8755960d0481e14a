"""What batch growth costs a step: the app's model (`compile_for_training`,
micro-batches) fitted without growth, as every run without --batch_growth
is, against the same model with the growth's machinery on -- its
learning-rate schedule counted in examples (`ExampleCountedSchedule`) and
its callback reading the noise scale at every epoch's end -- at a maximum
equal to the start, so that both train at the same batch throughout.

Both are timed in one process, one `fit` epoch of --updates updates each per
round, in a new order each round; the ratio is the median of per-round
ratios, with its quartiles. The number of times each model's train step was
traced is counted too (one each: no retrace from epoch to epoch).

    python -m benchmarks.bench_batch_growth --dataset=cifar10 --data_dir=DIR --output=bench_batch_growth.json
"""

import json
import os
import random
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags

from apps._cli import fail, run
from benchmarks._common import define_batch_flags, results_header

FLAGS = flags.FLAGS
define_batch_flags()
flags.FLAGS.set_default("batch_size", 256)
flags.DEFINE_integer("updates", 10, "Updates per timed round (one fit epoch).", lower_bound=1)
flags.DEFINE_integer("repeats", 15, "Timed rounds (medians reported).", lower_bound=1)
flags.DEFINE_string("output", "bench_batch_growth.json", "JSON results.")


def main():
    b, big = FLAGS.micro_batch_size, FLAGS.batch_size
    if big % b or big // b < 2:
        fail(f"--batch_size={big}: must be at least two micro-batches of --micro_batch_size={b}")
    import keras

    from sngm_keras.accumulation import MicroBatchModel
    from sngm_keras.batch_growth_fit import BatchGrowth
    from sngm_keras.data import make_datasets
    from sngm_keras.models import build_model
    from sngm_keras.training import TrainConfig
    from sngm_keras.training.factory import compile_for_training

    config = TrainConfig(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, model=FLAGS.model, optimizer="sngm", weight_decay=1e-4
    )
    train_ds, _, info = make_datasets(FLAGS.dataset, data_dir=FLAGS.data_dir, batch_size=big, seed=0, num_epochs=1000)
    data = iter(train_ds.repeat())
    models, callbacks, traces = {}, {}, {}
    for key in ("off", "on"):
        growth = BatchGrowth(start=big, maximum=big, multiple=b, examples_per_epoch=FLAGS.updates * big)
        model = MicroBatchModel(build_model(FLAGS.model, info.num_classes, info.image_shape, seed=0), b)
        compile_for_training(model, config, FLAGS.updates, growth=growth if key == "on" else None)
        traces[key] = []
        step = model.train_step
        model.train_step = lambda batch, step=step, key=key: traces[key].append(1) or step(batch)
        models[key], callbacks[key] = model, [growth.callback] if key == "on" else []
    times = {key: [] for key in models}
    order = list(models)
    shuffle = random.Random(0)
    for round_ in range(FLAGS.repeats + 1):  # round 0 traces and warms up, untimed
        shuffle.shuffle(order)
        for key in order:
            batches = [next(data) for _ in range(FLAGS.updates)]
            start = time.perf_counter()
            models[key].fit(
                (batch for batch in batches),
                epochs=round_ + 1,
                initial_epoch=round_,
                steps_per_epoch=FLAGS.updates,
                callbacks=callbacks[key],
                shuffle=False,
                verbose=0,
            )
            if round_:
                times[key].append(time.perf_counter() - start)
    per_round = [off / on for off, on in zip(times["off"], times["on"])]
    results = {
        **results_header(keras=keras.__version__),
        "off_examples_per_second": FLAGS.updates * big / statistics.median(times["off"]),
        "on_examples_per_second": FLAGS.updates * big / statistics.median(times["on"]),
        "on_over_off": statistics.median(per_round),
        "on_over_off_quartiles": statistics.quantiles(per_round, n=4)[::2] if len(per_round) > 1 else per_round * 2,
        "traces": {key: len(t) for key, t in traces.items()},
    }
    print(
        f"B={big} as {big // b}x{b}: without growth {results['off_examples_per_second']:.1f} examples/s, with its "
        f"machinery {results['on_examples_per_second']:.1f}: {results['on_over_off']:.3f}x (quartiles "
        f"{results['on_over_off_quartiles'][0]:.3f}-{results['on_over_off_quartiles'][1]:.3f}); traces "
        f"{results['traces']}"
    )
    with open(FLAGS.output, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    run(main)
