"""A study's folder: `study.json` says which study it holds, with which
settings, so that a rerun continues that study and another is refused. The
runs are under `runs/<run id>/`, one model_dir each, beside `results.md`
and the study's figure."""

import json
import os

from sngm_keras.training.config import ConfigError
from sngm_keras.training.rundir import RunDir, describe_differences, differences, read_json, write_atomic


def _study_json(output_dir):
    return os.path.join(output_dir, "study.json")


def _check_folder(output_dir):
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ConfigError("output_dir", f"{output_dir} exists and is not a folder")


def _not_writable(output_dir, error):
    return ConfigError("output_dir", f"{output_dir} is not writable ({error.strerror or error})")


def finished(config):
    """The summary of the finished run of `config`, or None."""
    return RunDir(config.model_dir).finished_summary(config.max_updates)


def check_output(output_dir, study, epochs_scale):
    """Reads, never writes: raises ConfigError unless the table study may
    run in output_dir (a new or empty folder, or the same study at the same
    scale)."""
    path = _study_json(output_dir)
    wanted = {"study": study, "epochs_scale": epochs_scale}
    _check_folder(output_dir)
    if os.path.exists(path):
        recorded = read_json(path)
        if {k: recorded.get(k) for k in wanted} != wanted:
            raise ConfigError(
                "output_dir",
                f"{output_dir} holds the study {recorded.get('study')!r} at epochs_scale="
                f"{recorded.get('epochs_scale')}; use another --output_dir",
            )
    else:
        _check_unclaimed(output_dir)


def _check_unclaimed(output_dir):
    """A folder without study.json must be new, or hold nothing but empty folders."""
    if not os.path.isdir(output_dir):
        return
    runs_dir = os.path.join(output_dir, "runs")
    if os.path.isdir(runs_dir) and any(
        os.path.exists(os.path.join(runs_dir, name, "config.json")) for name in os.listdir(runs_dir)
    ):
        raise ConfigError("output_dir", f"{output_dir} holds runs of an unknown study; use another --output_dir")
    others = sorted(n for n in os.listdir(output_dir) if n != "runs")
    if others:
        raise ConfigError(
            "output_dir",
            f"{output_dir} holds files that are not a study's ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}); use a new or empty --output_dir",
        )


def claim_output(output_dir, study, epochs_scale, lr_grid, max_extensions=None):
    """Records the table study in output_dir/study.json, or checks it is the
    same study at the same scale. The learning-rate grid may change between
    invocations (to widen a sweep): runs of learning rates still in the grid
    are reused, and the table reports the current grid only.
    `max_extensions`, when given, is recorded for the invocations that do
    not give it (`recorded_max_extensions`)."""
    check_output(output_dir, study, epochs_scale)
    path = _study_json(output_dir)
    try:
        os.makedirs(output_dir, exist_ok=True)
        recorded = read_json(path) if os.path.exists(path) else {"study": study, "epochs_scale": epochs_scale}
        grids = recorded.get("lr_grids", [])
        updated = dict(recorded, lr_grids=grids if lr_grid in grids else grids + [lr_grid])
        if max_extensions is not None:
            updated["max_extensions"] = max_extensions
        if updated != recorded:
            write_atomic(path, json.dumps(updated, indent=2))
    except OSError as error:
        raise _not_writable(output_dir, error) from None


def recorded_max_extensions(output_dir):
    """The `max_extensions` last given to the study in output_dir, else 0."""
    path = _study_json(output_dir)
    return read_json(path).get("max_extensions", 0) if os.path.exists(path) else 0


def check_settings(output_dir, settings):
    """Reads, never writes: raises ConfigError unless output_dir is new,
    empty, or holds a study with the same `settings`."""
    path = _study_json(output_dir)
    _check_folder(output_dir)
    if os.path.exists(path):
        recorded = read_json(path)
        differing = differences(recorded, settings)
        if differing:
            raise ConfigError(
                "output_dir",
                f"{output_dir} holds a study with other settings "
                f"({describe_differences(recorded, settings, differing, prefix='')}); use another --output_dir",
            )
    else:
        _check_unclaimed(output_dir)


def claim_settings(output_dir, settings):
    """Records a study's `settings` in output_dir/study.json, or checks that
    the study already there has the same ones."""
    check_settings(output_dir, settings)
    path = _study_json(output_dir)
    if os.path.exists(path):
        return
    try:
        os.makedirs(output_dir, exist_ok=True)
        write_atomic(path, json.dumps(settings, indent=2))
    except OSError as error:
        raise _not_writable(output_dir, error) from None
