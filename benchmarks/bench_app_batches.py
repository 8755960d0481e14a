"""Table 2's large batch as the training app builds it: B = 4096 as 32
micro-batches of 128 against plain B = 128, examples/s on ResNet-20.

Every model is built as `apps.train` builds it (`TrainConfig` ->
`MicroBatchModel` -> `compile_for_training`, BatchNorm in every block), fed
batches of the app's tf.data pipeline (`make_datasets`: CIFAR-10 with crop
and flip, normalized), and timed in one process, in a new random order each
round; the ratio is the median of per-round ratios. The same optimizer
(SNGM, weight decay 1e-4) runs in every model, so the ratio is the cost of
the micro-batch loop alone; Keras' own model without the wrapper is timed
beside them.

    python -m benchmarks.bench_app_batches --dataset=cifar10 --data_dir=DIR --output=bench_app_batches.json
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
flags.DEFINE_integer(
    "updates", 2, "Large-batch updates per timed round (the plain models see as many examples).", lower_bound=1
)
flags.DEFINE_integer("repeats", 7, "Timed rounds (medians reported).", lower_bound=1)
flags.DEFINE_string("output", "bench_app_batches.json", "JSON results.")


def main():
    import keras

    from sngm_keras.accumulation import MicroBatchModel
    from sngm_keras.data import make_datasets, steps_per_epoch
    from sngm_keras.models import build_model
    from sngm_keras.training import TrainConfig
    from sngm_keras.training.factory import compile_for_training

    b, big = FLAGS.micro_batch_size, FLAGS.batch_size
    if big % b:
        fail(f"--batch_size={big} is not a multiple of --micro_batch_size={b}")
    config = TrainConfig(
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        model=FLAGS.model,
        optimizer="sngm",
        weight_decay=1e-4,
        learning_rate=0.1,
    )
    pipelines, models = {}, {}
    for key, batch in (("plain", b), ("app", b), ("micro", big)):
        train_ds, _, info = make_datasets(
            FLAGS.dataset, data_dir=FLAGS.data_dir, batch_size=batch, seed=0, num_epochs=1000
        )
        pipelines[key] = iter(train_ds)
        net = build_model(FLAGS.model, info.num_classes, info.image_shape, seed=0)
        model = net if key == "plain" else MicroBatchModel(net, b)
        models[key] = compile_for_training(model, config, steps_per_epoch(info, batch))
        for _ in range(2):  # trace and warm up
            models[key].train_on_batch(*next(pipelines[key]))
    calls = {"plain": FLAGS.updates * big // b, "app": FLAGS.updates * big // b, "micro": FLAGS.updates}
    times = {key: [] for key in models}
    order = list(models)
    shuffle = random.Random(0)
    for _ in range(FLAGS.repeats):
        shuffle.shuffle(order)
        for key in order:
            batches = [next(pipelines[key]) for _ in range(calls[key])]
            start = time.perf_counter()
            for x, y in batches:
                models[key].train_on_batch(x, y)
            times[key].append(time.perf_counter() - start)
    examples = FLAGS.updates * big
    results = {
        **results_header(keras=keras.__version__),
        "configs": {},
    }
    for key in models:
        per_round = [t_app / t for t_app, t in zip(times["app"], times[key])]
        results["configs"][key] = {
            "examples_per_second": examples / statistics.median(times[key]),
            "over_app_b128": statistics.median(per_round),
            "over_app_b128_quartiles": statistics.quantiles(per_round, n=4)[::2]
            if len(per_round) > 1
            else per_round * 2,
        }
    names = {"plain": f"Keras model, B={b}", "app": f"app, B={b}", "micro": f"app, B={big} as {big // b}x{b}"}
    for key, entry in results["configs"].items():
        print(
            f"{names[key]:24s} {entry['examples_per_second']:8.1f} examples/s  "
            f"{entry['over_app_b128']:.3f}x app B={b} (quartiles {entry['over_app_b128_quartiles'][0]:.3f}-"
            f"{entry['over_app_b128_quartiles'][1]:.3f})"
        )
    with open(FLAGS.output, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    run(main)
