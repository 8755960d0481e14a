"""End-to-end training throughput: SNGM against Keras SGD(momentum=0.9).

The models train the same network from the same initial weights on the same
input pipeline in one process, timed in alternation (medians of repeats):
Keras SGD, a second identical Keras SGD (its ratio to the first is the
resolution of the measurement on this machine), SNGM as the paper trains it
(weight decay 1e-4) and SNGM without weight decay. The input pipeline alone
is timed too, to show it does not starve the model.

Two instances of one configuration can differ by 0.5-1% on a CPU (memory
placement), as much as the differences measured: --instances=N builds
every configuration N times, and each round's ratio is then that of the
instances' summed times (SGD's over the configuration's), so that no single
instance decides it.

    python -m benchmarks.bench_train --models=resnet20,twoconv --output=bench_train.json
"""

import json
import os
import platform
import random
import statistics
import time

from absl import flags

from apps._cli import fail, run

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["resnet20", "twoconv"], "Networks to time.")
flags.DEFINE_string("dataset", "sample", "Dataset for the input pipeline (sample, cifar10 with --data_dir, ...).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
flags.DEFINE_integer("batch_size", 128, "Batch size of every model.", lower_bound=1)
flags.DEFINE_integer("steps", 20, "Training steps per timed repeat.", lower_bound=1)
flags.DEFINE_integer(
    "repeats", 21, "Timed rounds; each model runs once per round, in a new order (medians reported).", lower_bound=1
)
CONFIGURATIONS = ("sgd", "sgd_again", "sngm", "sngm_no_wd")
flags.DEFINE_list(
    "optimizers",
    list(CONFIGURATIONS),
    "Configurations to time; sgd, the reference of every ratio, is always timed.",
)
flags.DEFINE_integer("instances", 1, "Models built per configuration; ratios of their summed times.", lower_bound=1)
flags.DEFINE_bool("jit_compile", False, "Compile the training step with XLA.")
flags.DEFINE_string("output", "bench_train.json", "JSON results.")


def pipeline_rate(train_ds, batches, batch_size):
    iterator = iter(train_ds)
    for _ in range(10):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def main():
    unknown = sorted(set(FLAGS.optimizers) - set(CONFIGURATIONS))
    if unknown:
        fail(f"--optimizers: unknown {', '.join(unknown)}; choose from {', '.join(CONFIGURATIONS)}")
    import keras

    import sngm_keras
    from sngm_keras.data import make_datasets
    from sngm_keras.models import build_model

    train_ds, _, info = make_datasets(
        FLAGS.dataset, data_dir=FLAGS.data_dir, batch_size=FLAGS.batch_size, seed=0, num_epochs=1000
    )
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "batch_size": FLAGS.batch_size,
        "jit_compile": FLAGS.jit_compile,
        "instances": FLAGS.instances,
        "dataset": FLAGS.dataset,
        "pipeline_images_per_second": pipeline_rate(train_ds, 300, FLAGS.batch_size),
        "models": {},
    }
    print(f"input pipeline alone: {results['pipeline_images_per_second']:,.0f} images/s")
    iterator = iter(train_ds.repeat())
    shuffle = random.Random(0)
    for name in FLAGS.models:
        base = build_model(name, info.num_classes, info.image_shape, seed=0)
        optimizers = {
            "sgd": lambda: keras.optimizers.SGD(0.01, momentum=0.9),
            "sgd_again": lambda: keras.optimizers.SGD(0.01, momentum=0.9),
            "sngm": lambda: sngm_keras.SNGM(0.01, momentum=0.9, weight_decay=1e-4),
            "sngm_no_wd": lambda: sngm_keras.SNGM(0.01, momentum=0.9),
        }
        models = {}
        for key, make in optimizers.items():
            if key != "sgd" and key not in FLAGS.optimizers:
                continue
            for instance in range(FLAGS.instances):
                model = build_model(name, info.num_classes, info.image_shape, seed=0)
                model.set_weights(base.get_weights())
                model.compile(
                    optimizer=make(),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    jit_compile=FLAGS.jit_compile,
                )
                for _ in range(3):  # trace, compile, warm up
                    model.train_on_batch(*next(iterator))
                models[(key, instance)] = model
        round_times = {model_key: [] for model_key in models}
        order = list(models)
        for _ in range(FLAGS.repeats):
            shuffle.shuffle(order)  # no model always runs first or after the same one
            for model_key in order:
                batches = [next(iterator) for _ in range(FLAGS.steps)]
                start = time.perf_counter()
                for x, y in batches:
                    models[model_key].train_on_batch(x, y)
                round_times[model_key].append(time.perf_counter() - start)
        # Per configuration and round: the mean time of its instances.
        configurations = dict.fromkeys(key for key, _ in models)
        times = {
            key: [statistics.fmean(t) for t in zip(*(round_times[(key, i)] for i in range(FLAGS.instances)))]
            for key in configurations
        }
        rate = {k: FLAGS.steps * FLAGS.batch_size / statistics.median(v) for k, v in times.items()}
        # Ratios paired within each round, so that drift of the machine's
        # speed over the run cancels; the median over rounds is reported.
        per_round = {k: [s / t for s, t in zip(times["sgd"], v)] for k, v in times.items() if k != "sgd"}
        ratio = {k: statistics.median(r) for k, r in per_round.items()}
        # The spread of the per-round ratios: how far one round is to be trusted.
        quartiles = {k: statistics.quantiles(r, n=4)[::2] if len(r) > 1 else r * 2 for k, r in per_round.items()}
        row = {f"{k}_images_per_second": r for k, r in rate.items()}
        row.update({f"{k}_over_sgd": r for k, r in ratio.items()})
        row.update({f"{k}_over_sgd_quartiles": q for k, q in quartiles.items()})
        if FLAGS.instances > 1:  # the resolution: SGD's instances against each other
            row["sgd_instance_ratios"] = [
                statistics.median(s / t for s, t in zip(round_times[("sgd", 0)], round_times[("sgd", i)]))
                for i in range(1, FLAGS.instances)
            ]
        results["models"][name] = row
        print(
            f"{name}: SGD {rate['sgd']:,.0f} images/s; "
            + ", ".join(
                f"{k} {rate[k]:,.0f} images/s ({r:.3f}x SGD, quartiles {quartiles[k][0]:.3f}-{quartiles[k][1]:.3f})"
                for k, r in ratio.items()
            )
            + "".join(
                f"; SGD instance {i + 1} / instance 0: {r:.3f}"
                for i, r in enumerate(row.get("sgd_instance_ratios", []))
            )
        )
    with open(FLAGS.output, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    run(main)
