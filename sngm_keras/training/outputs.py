"""A finished run's outputs: summary.json, final.keras, curves.png and
noise_scale.png (each plot also as PDF), from the trained model and its
history."""

import json
import math
import os
import platform
import sys

from sngm_keras.training.provenance import git_commit, package_version, utc_now
from sngm_keras.training.rundir import write_atomic


def write_outputs(config, run_dir, model, recorder, rows, results, replicas, micro, info, validated):
    """Writes the run's summary, final model and plots; returns the summary.
    `validated`: whether a validation split was evaluated during training."""
    summary = _summary(config, model, recorder, rows, results, replicas, micro, info)
    if validated:
        summary.update(_validation_summary(run_dir.read_validation(), info.num_validation))
        summary.update(selected_epoch(rows))
    summary = rounded_for_report(summary)
    model.model.save(run_dir.final_model)
    from sngm_keras.training.curves import plot_curves, plot_noise_scale

    if rows:
        plot_curves({curves_title(config): {_label(config): rows}}, run_dir.curves)
        sizes = epoch_batch_sizes(rows) if config.batch_growth != "none" else None
        plot_noise_scale(rows, sizes or config.batch_size, run_dir.noise_scale_plot, title=noise_scale_title(config))
    write_atomic(run_dir.summary, json.dumps(summary, indent=2))
    return summary


def curves_title(config):
    """curves.png's title: what was trained on what, with what (and the preset's name)."""
    lines = [
        f"{config.model} on {dataset_name(config)}",
        f"{config.optimizer.upper()}, B = {_batch_label(config)}, learning rate {config.learning_rate:g}",
    ]
    return "\n".join([config.preset] + lines if config.preset else lines)


def noise_scale_title(config):
    return f"Gradient noise scale\n{config.model} on {dataset_name(config)}, {config.optimizer.upper()}"


def dataset_name(config):
    """The dataset's name; a folder of images by its own name, not its path."""
    return os.path.basename(os.path.normpath(config.dataset))


def _label(config):
    return f"{config.optimizer.upper()}, B={_batch_label(config)}"


def _batch_label(config):
    if config.batch_growth == "none":
        return str(config.batch_size)
    return f"{config.batch_size} grown by the noise scale"


def epoch_batch_sizes(rows):
    """The batch of each epoch in history rows ([] where they do not say)."""
    sizes = [r.get("batch_size") for r in rows]
    return [int(s) for s in sizes] if sizes and all(s not in (None, "") for s in sizes) else []


def _growth_summary(config, rows):
    """A growing batch's record: the batch and the rate of every epoch, and the batches in words."""
    if config.batch_growth == "none":
        return {}
    from sngm_keras.batch_growth import describe_batch_sizes

    sizes = epoch_batch_sizes(rows)
    return {
        "epoch_batch_sizes": sizes,
        "epoch_learning_rates": [float(r["learning_rate"]) for r in rows],
        "batch_sizes_used": describe_batch_sizes(sizes),
    }


# Significant digits of summary.json's measured floats: float32 holds about
# 7, and 6 keep an accuracy over CIFAR's 10,000 or ImageNet's 50,000 test
# images exact.
REPORT_DIGITS = 6


def rounded_for_report(summary):
    """`summary` with its floats as they mean: seconds to 0.1, other measured
    figures to `REPORT_DIGITS` significant digits, the flags untouched (the
    configuration's own values, such as the learning rate)."""
    return {key: value if key == "flags" else _rounded(key, value) for key, value in summary.items()}


def _rounded(key, value):
    if isinstance(value, dict):
        return {k: _rounded(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(key, v) for v in value]
    if not isinstance(value, float) or not math.isfinite(value):
        return value
    if key.endswith("_seconds"):
        return round(value, 1)
    return float(f"{value:.{REPORT_DIGITS}g}")


def selected_epoch(rows):
    """The epoch a validation split selects: the highest validation accuracy
    at an epoch's end (the first on ties) among the epochs also evaluated on
    the test split, and the test accuracy there; {} without one."""
    both = [r for r in rows if _evaluated(r, "validation_accuracy") and _evaluated(r, "test_accuracy")]
    if not both:
        return {}
    best = max(both, key=lambda r: float(r["validation_accuracy"]))
    return {
        "best_validation_epoch": int(best["epoch"]),
        "test_accuracy_at_best_validation_epoch": float(best["test_accuracy"]),
    }


def _evaluated(row, key):
    return row.get(key) not in (None, "")


def _validation_summary(rows, num_validation):
    """The validation split's figures: after the last update, and the best of all evaluations."""
    if not rows:
        return {"num_validation": num_validation}
    accuracies = [float(r["validation_accuracy"]) for r in rows]
    return {
        "validation_accuracy": accuracies[-1],
        "validation_loss": float(rows[-1]["validation_loss"]),
        "best_validation_accuracy": max(accuracies),
        "num_validation": num_validation,
    }


def _versions():
    import keras

    versions = {"keras": keras.__version__, "backend": keras.backend.backend()}
    if "tensorflow" in sys.modules:  # reported when used, never imported for it
        versions["tensorflow"] = sys.modules["tensorflow"].__version__
    if keras.backend.backend() == "jax":
        import jax

        versions["jax"] = jax.__version__
        versions["devices"] = [str(d) for d in jax.devices()]
    return versions


def _summary(config, model, recorder, rows, results, replicas, micro, info):
    from sngm_keras.training.factory import inner_optimizer

    optimizer = inner_optimizer(model.optimizer)
    updates = int(optimizer.iterations.numpy())
    tested = [float(r["test_accuracy"]) for r in rows if r.get("test_accuracy") not in (None, "")]
    test_accuracy = float(results["accuracy"])
    epochs_done = int(rows[-1]["epoch"]) - recorder.stopped_in_epoch if rows else 0
    examples = recorder.examples_after(updates)
    return {
        # A run stopped by --max_updates before its last epoch is not
        # complete: rerun without it (or with a larger one) to continue.
        "complete": epochs_done >= config.epochs,
        "stopped_at_max_updates": bool(config.max_updates) and updates >= config.max_updates,
        "test_accuracy": test_accuracy,
        # Picking the best epoch on the test split overstates the result; the
        # validation split picks (best_validation_epoch).
        "max_test_accuracy_over_epochs_not_for_selection": max(tested + [test_accuracy]),
        "test_loss": float(results["loss"]),
        "train_loss": float(rows[-1]["train_loss"]) if rows else None,
        "updates": updates,
        "epochs_completed": epochs_done,
        "grad_per_n": examples / info.num_train,
        "examples_per_second": examples / recorder.train_seconds if recorder.train_seconds else None,
        "wall_seconds": recorder.wall_seconds,
        "train_seconds": recorder.train_seconds,
        "skipped_steps": int(optimizer.skipped_steps.numpy()),
        "replicas": replicas,
        "micro_batch_size": micro,
        "num_train": info.num_train,
        "num_test": info.num_test,
        "num_classes": info.num_classes,
        "started_utc": recorder.started_utc,
        "finished_utc": utc_now(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "sngm_keras": package_version(),
        "git": git_commit(),
        **_versions(),
        "flags": config.to_dict(),
        **_noise_scale_summary(rows),
        **_growth_summary(config, rows),
    }


def _noise_scale_summary(rows):
    """The last epoch's noise-scale metrics (None when not measured; the
    noise scale also None while its |G|^2 average is not positive)."""
    from sngm_keras.noise_scale import NOISE_SCALE_KEYS

    last = rows[-1] if rows else {}
    values = {k: float(last[k]) if last.get(k) not in (None, "") else None for k in NOISE_SCALE_KEYS}
    scale = values["gradient_noise_scale"]
    if scale is not None and not math.isfinite(scale):
        values["gradient_noise_scale"] = None
    return values
