"""Train a ResNet (or the paper's two-conv network) with SNGM, MSGD or LARS.

    python -m apps.train --preset=demo                      # the offline demo
    python -m apps.train --preset=table2_resnet20_sngm_b4096 --data_dir=DIR
    python -m apps.train --flagfile=best.flags

Flags override the preset; rerunning the same command resumes from the last
checkpoint in --model_dir (and a run stopped by --max_updates continues when
rerun without it, or with a larger one). The default --model_dir is
runs/<preset> for a preset as it is, else runs/<preset or model_optimizer_bB>-
<hash of the settings>, so different settings never share a folder. Nothing
is written before the data, the devices and the model are ready. See
`sngm_keras.training` for what is written.
"""

import dataclasses
import os
import signal
import sys

from absl import flags

from apps._cli import fail, run, show_reading, stopping_on_signals
from apps._startup import finish_library_imports
from sngm_keras.training.config import DATASETS, DEFAULT_CHECKPOINT_EVERY, TrainConfig
from sngm_keras.training.presets import PRESETS, model_defaults

FLAGS = flags.FLAGS
_D = TrainConfig()

flags.DEFINE_string("preset", None, f"A named configuration: {', '.join(PRESETS)}.")
flags.DEFINE_string(
    "dataset", _D.dataset, f"{', '.join(DATASETS)}, or a folder with train/ and test/ of class folders."
)
flags.DEFINE_string("data_dir", None, "TFDS data_dir (prepared or download target).")
flags.DEFINE_bool("download", _D.download, "Let TFDS download the dataset.")
flags.DEFINE_string(
    "model",
    _D.model,
    "resnet20/32/44/56/110, resnet18/34/50, or twoconv. Without --preset a ResNet brings the paper's recipe for "
    "--optimizer as its defaults (CIFAR ResNets Table 2's: cifar10, 160 epochs, B=4096 as 32x128 for sngm and "
    "lars, B=128 for msgd, weight decay 1e-4, the paper's rate and schedule; ImageNet ResNets Table 3's), in "
    "place of the defaults shown here, which are twoconv's (the demo's); explicit flags override either.",
)
flags.DEFINE_string("optimizer", _D.optimizer, "sngm, msgd or lars.")
flags.DEFINE_integer("batch_size", _D.batch_size, "Effective batch size B (examples per parameter update).")
flags.DEFINE_integer(
    "micro_batch_size", None, "Examples per forward/backward pass and replica (default: B / replicas)."
)
flags.DEFINE_float("learning_rate", _D.learning_rate, "Initial learning rate.")
flags.DEFINE_float("momentum", _D.momentum, "Momentum beta in [0, 1).")
flags.DEFINE_float("weight_decay", _D.weight_decay, "L2 weight decay added to the gradient.")
flags.DEFINE_float("trust_coefficient", _D.trust_coefficient, "LARS trust coefficient eta.")
flags.DEFINE_bool(
    "pytorch_lars",
    _D.pytorch_lars,
    "LARS as the pytorch-lars code: every variable adapted and "
    "decayed, zero-norm variables frozen (default: biases and BatchNorm excluded).",
)
flags.DEFINE_string("lr_schedule", _D.lr_schedule, "poly, step or constant.")
flags.DEFINE_float("power", _D.power, "Power of the poly schedule.")
flags.DEFINE_list("decay_epochs", list(map(str, _D.decay_epochs)), "Epochs where --lr_schedule=step divides the rate.")
flags.DEFINE_float("decay_factor", _D.decay_factor, "What --lr_schedule=step divides the rate by.")
flags.DEFINE_integer("warmup_epochs", _D.warmup_epochs, "Linear warm-up epochs (poly schedule).")
flags.DEFINE_float("warmup_learning_rate", _D.warmup_learning_rate, "Learning rate the warm-up starts from.")
flags.DEFINE_integer("epochs", _D.epochs, "Epochs to train.")
flags.DEFINE_integer("max_updates", None, "Stop after this many parameter updates.")
flags.DEFINE_string("strategy", _D.strategy, "auto, one_device, mirrored or multi_worker.")
flags.DEFINE_integer("num_cpu_devices", _D.num_cpu_devices, "Split the CPU into N logical devices (for mirrored).")
flags.DEFINE_string(
    "model_dir",
    None,
    "Where checkpoints and results go (default: runs/<preset> for a preset as "
    "it is, else runs/<preset or model_optimizer_bB>-<hash of the settings>).",
)
flags.DEFINE_integer("seed", _D.seed, "Seed of initialization, data order and augmentation.")
flags.DEFINE_bool("augment", _D.augment, "Training augmentation.")
flags.DEFINE_bool("deterministic", _D.deterministic, "Deterministic TensorFlow ops (bit-identical resumes).")
flags.DEFINE_bool(
    "jit_compile", _D.jit_compile, "XLA: the whole step on one device, the micro-batch loop under a strategy."
)
flags.DEFINE_string("dtype_policy", _D.dtype_policy, "float32, mixed_float16 or mixed_bfloat16.")
flags.DEFINE_integer("eval_every", _D.eval_every, "Evaluate on the test split every N epochs.")
flags.DEFINE_integer("eval_batch_size", _D.eval_batch_size, "Batch size of evaluation.")
flags.DEFINE_integer(
    "validation_size",
    _D.validation_size,
    "Hold this many training images out (a fixed random subset) as a validation split.",
)
flags.DEFINE_integer(
    "validations_per_epoch",
    _D.validations_per_epoch,
    "Evaluate the validation split this many times per epoch (validation.csv).",
)
flags.DEFINE_integer(
    "image_size",
    None,
    "Side of the square images trained on: imagenet2012 (default 224) and image folders streamed from their files "
    "(default: the images' own size when they all have one, else 224 for the ImageNet ResNets).",
)
flags.DEFINE_bool(
    "stream",
    _D.stream,
    "--dataset=DIR: stream the images from their files with ImageNet's random-resized crops even when they have one "
    "size and fit in memory (images of different sizes are always streamed).",
)
flags.DEFINE_bool(
    "skip_bad_images", _D.skip_bad_images, "--dataset=DIR: leave out the files that do not decode instead of stopping."
)
flags.DEFINE_integer(
    "verbose",
    None,
    "Keras progress: 0 silent, 1 a progress bar, 2 a line per epoch "
    "(default: 1 on a terminal, 2 when the output goes to a file or pipe).",
)
flags.DEFINE_string(
    "coordinator_address",
    None,
    "--strategy=multi_worker on JAX: process 0's host:port (else KERAS_DISTRIBUTION_JOB_ADDRESSES).",
)
flags.DEFINE_integer(
    "num_processes",
    None,
    "--strategy=multi_worker on JAX: the number of processes (else KERAS_DISTRIBUTION_NUM_PROCESSES).",
)
flags.DEFINE_integer(
    "process_id",
    None,
    "--strategy=multi_worker on JAX: this process's id, 0 the chief (else KERAS_DISTRIBUTION_PROCESS_ID).",
)
flags.DEFINE_bool(
    "model_defaults",
    True,
    "Without --preset, let a ResNet bring the paper's recipe as its defaults (see --model); "
    "--nomodel_defaults keeps the defaults shown here.",
)
flags.DEFINE_integer(
    "checkpoint_every",
    _D.checkpoint_every,
    "Also checkpoint every N updates within epochs, to resume there exactly (0: at epoch ends only; default: "
    f"every {DEFAULT_CHECKPOINT_EVERY} where the run is that long). SIGTERM and Ctrl-C checkpoint the update they "
    "stop at in any case.",
)
flags.DEFINE_integer(
    "keep_checkpoints", _D.keep_checkpoints, "How many checkpoints within epochs to keep, besides the last epoch's."
)
flags.DEFINE_bool(
    "noise_scale", _D.noise_scale, "Measure the gradient noise scale B_simple (needs 2+ micro-batches a step)."
)

FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "preset"]


def default_model_dir(config):
    """runs/<preset> for a preset as it is; otherwise a folder named after
    the settings, so that two configurations never meet in one folder."""
    if config.preset is not None:
        preset = TrainConfig.from_preset(config.preset)
        if preset.result_fields() == config.result_fields():
            return os.path.join("runs", config.preset)
    name = config.preset or f"{config.model}_{config.optimizer}_b{config.batch_size}"
    return os.path.join("runs", f"{name}-{config.settings_digest()}")


def config_from_flags():
    """The validated configuration of the flags; refuses flags the
    configuration would ignore."""
    present = [name for name in FIELDS if FLAGS[name].present]
    overrides = {name: FLAGS[name].value for name in present}
    if "decay_epochs" in overrides:
        try:
            overrides["decay_epochs"] = tuple(int(e) for e in overrides["decay_epochs"])
        except ValueError:
            fail(f"--decay_epochs: not a list of integers: {','.join(FLAGS.decay_epochs)}")
    if FLAGS.preset is None and FLAGS.model_defaults:
        defaults = model_defaults(FLAGS.model, FLAGS.optimizer)
        if defaults and "learning_rate" not in defaults and "learning_rate" not in overrides:
            fail(f"--learning_rate: the paper has no {FLAGS.optimizer} row for {FLAGS.model}; give a rate")
        overrides = {**defaults, **overrides}
    config = TrainConfig.from_preset(FLAGS.preset, **overrides)
    if "model_dir" not in overrides:
        config.model_dir = default_model_dir(config)
    config.validate()
    ignored = config.ignored_fields()
    for name in present:
        if name in ignored:
            fail(f"--{name}: {ignored[name]}; drop it")
    return config


_model_dir = None


def _interrupted():
    if _model_dir and os.path.isdir(_model_dir):
        return f"interrupted; rerun the same command to resume from the last checkpoint in {_model_dir}"
    return "interrupted before the run started; nothing was written"


def main():
    global _model_dir
    from sngm_keras.data import DataError
    from sngm_keras.training.cluster import WorkerLost
    from sngm_keras.training.config import ConfigError
    from sngm_keras.training.stopping import StopRequest, StopRequested

    _model_dir = None
    try:
        config = config_from_flags()
        _model_dir = config.model_dir
        finish_library_imports()
        from sngm_keras.data import progress
        from sngm_keras.training import train

        request = StopRequest()
        with progress.reported_to(show_reading), stopping_on_signals(request) as received:
            summary = train(config, stop_request=request)
    except (ConfigError, DataError) as error:
        fail(str(error))
    except WorkerLost as error:
        fail(str(error), code=1)
    except StopRequested as stop:
        # In a cluster a signal to any worker stops them all, each with that signal's code.
        worker, signum = (None, received[-1]) if received else min(request.stopped_by.items())
        folder = config.model_dir if stop.chief else "the chief's --model_dir"
        print(f"stopped: {stopped_line(stop.state, signum, folder, worker)}", file=sys.stderr)
        sys.exit(128 + signum)
    if summary.get("already_complete"):
        state = "was already complete" if summary["complete"] else "had already stopped at --max_updates"
    else:
        state = (
            "finished"
            if summary["complete"]
            else (f"stopped at --max_updates={config.max_updates}; rerun without it to continue")
        )
    if summary.get("chief") is False:
        print(f"run {state} on this worker; the results are in the chief's --model_dir")
        return
    print(finished_line(state, summary, config.model_dir))
    for line in noise_scale_lines(summary, noise_scale_epochs(config.model_dir), config.batch_size):
        print(line)


def stopped_line(state, signum, model_dir, worker=None):
    """Where a run stopped by a signal (to another `worker` of its cluster)
    checkpointed, and how it resumes."""
    name = signal.Signals(signum).name if signum > 0 else "a stop request"
    if worker is not None:
        name += f" to worker {worker}"
    from sngm_keras.training.rundir import describe_position

    return (
        f"{name}: checkpointed at update {state['updates']} ({describe_position(state)}) in {model_dir}; rerun the "
        "same command to resume there"
    )


def finished_line(state, summary, model_dir):
    """The run's result: the final test accuracy and, where a validation
    split was held out, the test accuracy at the epoch it selects; never the
    test split's maximum over epochs, which picks on the test split."""
    selected = ""
    if summary.get("best_validation_epoch") is not None:
        selected = (
            f" ({summary['test_accuracy_at_best_validation_epoch']:.4f} at epoch {summary['best_validation_epoch']}, "
            "the epoch of highest validation accuracy)"
        )
    return (
        f"run {state}: final test accuracy {summary['test_accuracy']:.4f}{selected}; {summary['updates']} updates, "
        f"{summary['examples_per_second'] or 0:.0f} examples/s; results in {model_dir}"
    )


def noise_scale_epochs(model_dir):
    """(updates, B_simple) at the end of each epoch with a measurement, from history.csv."""
    from sngm_keras.training.rundir import RunDir

    rows = RunDir(model_dir).read_history()
    return [(int(r["updates"]), float(r["gradient_noise_scale"])) for r in rows if r.get("gradient_noise_scale")]


def noise_scale_lines(summary, epochs, batch_size):
    """What the measured noise scale says of the batch size: one line until
    the estimate has settled (`sngm_keras.noise_scale.updates_to_settle`),
    then two; none when it was not measured. `epochs`: `noise_scale_epochs`."""
    from sngm_keras import noise_scale

    if summary.get("gradient_sq_norm_ema") is None:
        return []
    window, needed = noise_scale.ema_window(), noise_scale.updates_to_settle()
    if summary["updates"] < needed:
        return [
            f"gradient noise scale: not settled yet: {summary['updates']} updates, needs {needed} "
            f"(two windows of its {window}-update average)"
        ]
    scale = summary.get("gradient_noise_scale")
    if scale is None:
        return [
            "gradient noise scale: not measurable (its |G|^2 average is not positive); the batch is likely below it"
        ]
    movement, bound = "", ""
    change = noise_scale.change_over_window(epochs)
    if change:
        ratio, updates = change
        trend = noise_scale.trend(ratio)
        movement = f", {'still rising' if trend == 'rising' else trend}: x{ratio:.2f} over the last {updates} updates"
        bound = {"rising": " or more", "falling": " or less"}.get(trend, "")
    steps, examples = noise_scale.steps_and_examples(scale, batch_size)
    return [
        f"gradient noise scale B_simple ~ {scale:.0f} at the end (its average over ~{window} updates){movement}",
        f"suggested batch B ~ {noise_scale.suggested_batch(scale)}{bound} (McCandlish et al.'s critical batch: "
        f"B_simple to a power of two); at B = {batch_size} this run takes ~{steps:.3g}x the minimal steps, "
        f"~{examples:.3g}x the minimal examples",
    ]


if __name__ == "__main__":
    run(main, interrupted=_interrupted)
