"""What the benchmarks of the app's large-batch step share: the flags that
name the model, data and batch, and the header of their JSON results."""

import os
import platform

from absl import flags

FLAGS = flags.FLAGS


def define_batch_flags():
    """--model, --dataset, --data_dir, --micro_batch_size and --batch_size."""
    flags.DEFINE_string("model", "resnet20", "Network.")
    flags.DEFINE_string(
        "dataset", "sample", "Dataset of the input pipeline (cifar10 with --data_dir for the real one)."
    )
    flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
    flags.DEFINE_integer(
        "micro_batch_size", 128, "Micro-batch b (and the plain batch, where one is timed).", lower_bound=1
    )
    flags.DEFINE_integer("batch_size", 4096, "Effective batch B, a multiple of --micro_batch_size.", lower_bound=1)


def results_header(**versions):
    """The machine, the given library versions and the flags of `define_batch_flags`, `--updates` and `--repeats`."""
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        **versions,
        "model": FLAGS.model,
        "dataset": FLAGS.dataset,
        "micro_batch_size": FLAGS.micro_batch_size,
        "batch_size": FLAGS.batch_size,
        "updates_per_round": FLAGS.updates,
        "repeats": FLAGS.repeats,
    }
