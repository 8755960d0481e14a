"""How `apps.reproduce` trains one run of a study: through `python -m
apps.train` with a flagfile kept beside it, undoing what this invocation
created when its first run is refused."""

import os
import subprocess
import sys

from apps._cli import INTERRUPTED, fail
from sngm_keras.training.flagfile import flagfile_text

# What this invocation created (folders, study.json, flagfiles), removed
# again when its first run is refused, so a mistake leaves nothing behind.
_created = []
_trained = []


def note_new(*paths):
    _created.extend(p for p in paths if not os.path.exists(p) and p not in _created)


def undo_created():
    for path in reversed(_created):
        if os.path.isdir(path):
            if not os.listdir(path):
                os.rmdir(path)
        elif os.path.exists(path):
            os.remove(path)
    _created.clear()


def train(run_id, config, output_dir):
    """Trains (or resumes) one run through apps.train, with its flagfile beside it."""
    from sngm_keras.training.rundir import RunDir

    flagfile = os.path.join(output_dir, "runs", f"{run_id}.flags")
    note_new(output_dir, os.path.dirname(flagfile), flagfile)
    os.makedirs(os.path.dirname(flagfile), exist_ok=True)
    with open(flagfile, "w") as f:
        f.write(flagfile_text(config))
    print(f"\n== {run_id}", flush=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "apps.train", f"--flagfile={flagfile}"], stderr=subprocess.PIPE, text=True
    )
    last = ""
    try:
        for line in process.stderr:  # shown as it comes; the last line kept for the message
            sys.stderr.write(line)
            if line.strip():
                last = line.strip()
        process.wait()
    except KeyboardInterrupt:
        process.wait(timeout=120)  # apps.train stops at Ctrl-C too, its folder resumable
        raise
    if process.returncode == 2:  # refused before it wrote anything
        if not _trained:
            undo_created()
        fail(f"run {run_id}: {last.removeprefix('error: ')}")
    _trained.append(run_id)
    if process.returncode == INTERRUPTED:
        raise KeyboardInterrupt
    if process.returncode:
        state = RunDir(config.model_dir).load_state()
        resume = (
            f"; rerunning the same command resumes it from epoch {state['epoch']}"
            if state
            else "; see its output above"
        )
        print(f"error: run {run_id} failed (exit {process.returncode}){resume}", file=sys.stderr)
        sys.exit(1)
