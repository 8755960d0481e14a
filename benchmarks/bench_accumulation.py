"""Large batches from micro-batches: memory and speed on ResNet-20.

Three ways to train: plain B = 128; B = 4096 as 32 micro-batches of 128
(`MicroBatchModel`, measuring the gradient noise scale as it does by
default; `micro_nonoise` is the same with `noise_scale=False`); and a direct
B = 4096 step. Peak memory is measured in a fresh process per configuration:
the peak resident memory, its growth over the resident memory after the
model and data are set up, and the peak of the tensors TensorFlow's CPU
allocator holds during one step after the step is traced (the step's own
buffers, without the code and graphs a process also keeps); examples/s is
timed in one process, the configurations alternating, medians of repeats.

    python -m benchmarks.bench_accumulation --output=bench_accumulation.json
    python -m benchmarks.bench_accumulation --configs=micro,micro_nonoise --repeats=7   # the noise scale's cost
"""

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from absl import flags

from apps._cli import fail, run

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "resnet20", "Network.")
flags.DEFINE_integer("micro_batch_size", 128, "Micro-batch b (and the plain batch).")
flags.DEFINE_integer("batch_size", 4096, "Effective batch B.")
flags.DEFINE_integer("repeats", 3, "Timed repeats (median reported).")
flags.DEFINE_string("output", "bench_accumulation.json", "JSON results.")
flags.DEFINE_string("measure_memory_of", None, "Internal: run one configuration and print its memory as JSON.")

CONFIGS = ("plain", "micro", "micro_nonoise", "direct")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_list("configs", list(CONFIGS), f"Which of {', '.join(CONFIGS)} to run (the first is the reference).")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(kind):
    import keras
    import numpy as np

    import sngm_keras
    from sngm_keras.models import build_model

    b, big = FLAGS.micro_batch_size, FLAGS.batch_size
    model = build_model(FLAGS.model, 10, (32, 32, 3), seed=0)
    if kind in ("micro", "micro_nonoise"):
        model = sngm_keras.MicroBatchModel(model, micro_batch_size=b, noise_scale=kind == "micro")
    model.compile(
        optimizer=sngm_keras.SNGM(0.1, weight_decay=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    size = b if kind == "plain" else big
    rng = np.random.default_rng(0)
    x = rng.normal(size=(size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=size).astype("int32")
    return model, x, y


def measure_memory(kind):
    import tensorflow as tf

    model, x, y = build(kind)
    baseline = rss_bytes()
    for _ in range(2):
        model.train_on_batch(x, y)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tf.config.experimental.reset_memory_stats("CPU:0")
    held = tf.config.experimental.get_memory_info("CPU:0")["current"]
    model.train_on_batch(x, y)
    step_tensors = tf.config.experimental.get_memory_info("CPU:0")["peak"] - held
    memory = {"baseline_bytes": baseline, "peak_bytes": peak, "step_tensor_peak_bytes": step_tensors}
    print(json.dumps({"kind": kind, **memory}))


def noise_scale_cost(configs, model, times):
    """The noise scale's price: examples/s with it over without (medians of
    the alternated repeats, and each repeat's ratio), and the growth of peak
    memory against the size of one gradient."""
    on, off = configs["micro"], configs["micro_nonoise"]
    ratios = [t_off / t_on for t_on, t_off in zip(times["micro"], times["micro_nonoise"])]
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {
        "throughput_on_over_off": on["examples_per_second"] / off["examples_per_second"],
        "per_repeat_ratios": [round(r, 4) for r in ratios],
        "per_repeat_median": statistics.median(ratios),
        "per_repeat_quartiles": [quartiles[0], quartiles[2]],
        "peak_growth_bytes": on["peak_bytes"] - off["peak_bytes"],
        "step_tensor_peak_growth_bytes": on["step_tensor_peak_bytes"] - off["step_tensor_peak_bytes"],
        "gradient_bytes": sum(4 * math.prod(v.shape) for v in model.trainable_variables),
    }


def main():
    if FLAGS.measure_memory_of:
        return measure_memory(FLAGS.measure_memory_of)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "model": FLAGS.model,
        "micro_batch_size": FLAGS.micro_batch_size,
        "batch_size": FLAGS.batch_size,
        "configs": {},
    }
    configs = [kind for kind in FLAGS.configs if kind in CONFIGS]
    if not configs or len(configs) != len(FLAGS.configs):
        fail(f"--configs: choose among {', '.join(CONFIGS)}")
    for kind in configs:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_accumulation",
                f"--measure_memory_of={kind}",
                f"--model={FLAGS.model}",
                f"--micro_batch_size={FLAGS.micro_batch_size}",
                f"--batch_size={FLAGS.batch_size}",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,  # where `benchmarks` is importable
        )
        if out.returncode:
            results["configs"][kind] = {"memory_error": out.stderr.strip().splitlines()[-1:]}
            continue
        results["configs"][kind] = json.loads(out.stdout.strip().splitlines()[-1])
    models = {kind: build(kind) for kind in configs if "peak_bytes" in results["configs"][kind]}
    for model, x, y in models.values():
        model.train_on_batch(x, y)
    times = {kind: [] for kind in models}
    per_update = FLAGS.batch_size // FLAGS.micro_batch_size
    for repeat in range(FLAGS.repeats):
        order = list(models.items())
        for kind, (model, x, y) in order[::-1] if repeat % 2 else order:  # no kind always first
            calls = per_update if kind == "plain" else 1  # the same examples in each
            start = time.perf_counter()
            for _ in range(calls):
                model.train_on_batch(x, y)
            times[kind].append(time.perf_counter() - start)
    reference = configs[0]
    results["reference"] = reference
    plain = results["configs"][reference]
    for kind in models:
        entry = results["configs"][kind]
        entry["examples_per_second"] = FLAGS.batch_size / statistics.median(times[kind])
        entry["peak_over_plain"] = entry["peak_bytes"] / plain["peak_bytes"]
        entry["growth_over_plain"] = (entry["peak_bytes"] - entry["baseline_bytes"]) / (
            plain["peak_bytes"] - plain["baseline_bytes"]
        )
        entry["throughput_over_plain"] = entry["examples_per_second"] / (
            FLAGS.batch_size / statistics.median(times[reference])
        )
        print(
            f"{kind:13s} peak {entry['peak_bytes'] / 2**30:6.2f} GiB ({entry['peak_over_plain']:.2f}x {reference}; "
            f"growth {entry['growth_over_plain']:.2f}x)  {entry['examples_per_second']:7.1f} examples/s "
            f"({entry['throughput_over_plain']:.3f}x {reference})"
        )
    if "micro" in models and "micro_nonoise" in models:
        results["noise_scale_cost"] = noise_scale_cost(results["configs"], models["micro"][0], times)
        cost = results["noise_scale_cost"]
        print(
            f"noise scale on/off: {cost['throughput_on_over_off']:.3f}x the examples/s (per-repeat ratios: median "
            f"{cost['per_repeat_median']:.3f}, quartiles {cost['per_repeat_quartiles'][0]:.3f}-"
            f"{cost['per_repeat_quartiles'][1]:.3f}, all {cost['per_repeat_ratios']}); "
            f"peak resident memory +{cost['peak_growth_bytes'] / 2**20:.1f} MiB, "
            f"the step's tensors +{cost['step_tensor_peak_growth_bytes'] / 2**20:.2f} MiB, one gradient "
            f"{cost['gradient_bytes'] / 2**20:.2f} MiB"
        )
    with open(FLAGS.output, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    run(main)
