"""How `apps.reproduce` trains one run of a study: through `python -m
apps.train` with a flagfile kept beside it, undoing what this invocation
created when its first run is refused.

A run's trainer does not outlive `apps.reproduce`: a rerun of the study
would otherwise start a second trainer in the same run folder. Ctrl-C
reaches both (the terminal signals the whole process group); SIGTERM of
`apps.reproduce` terminates the trainer before `apps.reproduce` ends; and
on Linux the trainer also gets SIGTERM when `apps.reproduce` dies of
anything else, SIGKILL included (`PR_SET_PDEATHSIG`).
"""

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading

from apps._cli import INTERRUPTED, fail
from sngm_keras.studies.report import counted

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_TERMINATE_WAIT_SECONDS = 10  # for a terminated trainer to end before it is killed

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


def die_with_parent():
    """A `preexec_fn` that has the kernel send the child SIGTERM when this
    process dies, or None where that is not available (outside Linux).

    libc's prctl is looked up here, before the fork, so the child only
    makes the call (a fork of a threaded process should do little else)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def set_parent_death_signal():
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was set
            os.kill(os.getpid(), signal.SIGTERM)

    return set_parent_death_signal


class _Terminated(BaseException):
    """SIGTERM arrived while a child ran (a BaseException: nothing on the way may swallow it)."""


def _raise_terminated(signum, frame):
    raise _Terminated


@contextlib.contextmanager
def _sigterm_ends_child(process):
    """Within the block, SIGTERM of this process terminates `process` (killed
    if it has not ended after _TERMINATE_WAIT_SECONDS), then ends this
    process by SIGTERM as it would have. Only where SIGTERM has its default
    action and in the main thread (where Python runs signal handlers)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM does not cut the wait short
        process.terminate()
        try:
            process.wait(timeout=_TERMINATE_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
        sys.exit(128 + signal.SIGTERM)  # not reached: the signal ends the process
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def export(ready, then, output_dir):
    """Prints the apps.train command of every run in `ready` ((run_id,
    config) pairs; a folder listed twice, as a repeated grid factor gives,
    once), one a line on stdout, its flagfile written; says on stderr what
    follows them (`then`, or None when nothing waits for them)."""
    from sngm_keras.training.rundir import RunDir

    first = {}
    for run in ready:
        first.setdefault(run[1].model_dir, run)
    ready = list(first.values())
    for run_id, config in ready:
        print(f"python -m apps.train --flagfile={shlex.quote(write_flagfile(run_id, config, output_dir))}")
    if not ready and then is None:
        print("no run left to train; --report_only writes the results", file=sys.stderr)
        return
    started = sum(RunDir(config.model_dir).has_progress() for _, config in ready)
    lines = [f"{counted(len(ready), 'run')} ready to train, one process each, from any folder"]
    if started:
        lines.append(f"{started} of them started before and resume: make sure no process still trains {_them(started)}")
    if then:
        lines.append(f"once they have finished, rerun with --export_commands for {then}")
    lines.append("--report_only then writes the results")
    print("; ".join(lines), file=sys.stderr)


def _them(n):
    return "it" if n == 1 else "them"


def run_child(command):
    """Runs `command`, its stderr shown as it comes; returns its exit code
    and its last non-empty stderr line. The child ends with this process
    (see the module's docstring)."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent())
    last = ""
    try:
        with _sigterm_ends_child(process):
            for line in process.stderr:
                sys.stderr.write(line)
                if line.strip():
                    last = line.strip()
            process.wait()
    except KeyboardInterrupt:
        process.wait(timeout=120)  # apps.train stops at Ctrl-C too, its folder resumable
        raise
    return process.returncode, last


def write_flagfile(run_id, config, output_dir):
    """Writes the run's flagfile, output_dir/runs/<run_id>.flags; returns its path."""
    from sngm_keras.training.flagfile import flagfile_text

    flagfile = os.path.join(output_dir, "runs", f"{run_id}.flags")
    note_new(output_dir, os.path.dirname(flagfile), flagfile)
    os.makedirs(os.path.dirname(flagfile), exist_ok=True)
    with open(flagfile, "w") as f:
        f.write(flagfile_text(config))
    return flagfile


def train(run_id, config, output_dir):
    """Trains (or resumes) one run through apps.train, with its flagfile beside it."""
    from sngm_keras.training.rundir import RunDir, describe_position

    flagfile = write_flagfile(run_id, config, output_dir)
    print(f"\n== {run_id}", flush=True)
    returncode, last = run_child([sys.executable, "-m", "apps.train", f"--flagfile={flagfile}"])
    if returncode == 2:  # refused before it wrote anything
        if not _trained:
            undo_created()
        fail(f"run {run_id}: {last.removeprefix('error: ')}")
    _trained.append(run_id)
    if returncode == INTERRUPTED:
        raise KeyboardInterrupt
    if returncode:
        state = RunDir(config.model_dir).load_state()
        resume = (
            f"; rerunning the same command resumes it from {describe_position(state)}"
            if state
            else "; see its output above"
        )
        print(f"error: run {run_id} failed (exit {returncode}){resume}", file=sys.stderr)
        sys.exit(1)
