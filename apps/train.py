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

from apps import _config_flags
from apps._cli import fail, run, show_reading, stopping_on_signals
from apps._config_flags import define_config_flags, given_config_values
from apps._startup import finish_library_imports
from sngm_keras.training.config import TrainConfig, help_of
from sngm_keras.training.presets import PRESETS, model_defaults

FLAGS = flags.FLAGS
FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "preset"]

flags.DEFINE_string("preset", None, f"A named configuration: {', '.join(PRESETS)}.")
define_config_flags(
    FIELDS,
    defaults={"model_dir": None},  # the settings' folder, `default_model_dir`
    helps={
        "model": help_of("model")
        + " Without --preset a ResNet brings the paper's recipe for --optimizer as its defaults (CIFAR ResNets "
        "Table 2's: cifar10, 160 epochs, B=4096 as 32x128 for sngm and lars, B=128 for msgd, weight decay 1e-4, "
        "the paper's rate and schedule; ImageNet ResNets Table 3's), in place of the defaults shown here, which "
        "are twoconv's (the demo's); explicit flags override either.",
        "model_dir": help_of("model_dir")
        + " Default: runs/<preset> for a preset as it is, else runs/<preset or model_optimizer_bB>-<hash of the "
        "settings>.",
    },
)
flags.adopt_module_key_flags(_config_flags)  # listed by --help as this app's own
flags.DEFINE_bool(
    "model_defaults",
    True,
    "Without --preset, let a ResNet bring the paper's recipe as its defaults (see --model); "
    "--nomodel_defaults keeps the defaults shown here.",
)


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
    overrides = given_config_values(FIELDS)
    present = list(overrides)
    if FLAGS.preset is None and FLAGS.model_defaults:
        defaults = model_defaults(FLAGS.model, FLAGS.optimizer)
        if defaults and "learning_rate" not in defaults and "learning_rate" not in overrides:
            fail(f"--learning_rate: the paper has no {FLAGS.optimizer} row for {FLAGS.model}; give a rate")
        overrides = {**defaults, **overrides}
    config = TrainConfig.from_preset(FLAGS.preset, **overrides)
    if "model_dir" not in overrides:
        config = dataclasses.replace(config, model_dir=default_model_dir(config))
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
