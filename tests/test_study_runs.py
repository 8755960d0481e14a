"""apps._study_runs: a study's trainer does not outlive apps.reproduce.

A stand-in parent (the code apps.reproduce runs for each run) starts a
stand-in trainer that reports its process id and sleeps; the tests end the
parent and look for the trainer."""

import os
import signal
import subprocess
import sys
import time

import pytest

from apps import _study_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINER = "import os, sys, time; print(os.getpid(), file=sys.stderr, flush=True); time.sleep(60)"
PARENT = f"""
import sys
from apps import _study_runs
if sys.argv[1] == "without_parent_death_signal":
    _study_runs.die_with_parent = lambda: None
_study_runs.run_child([sys.executable, "-c", {TRAINER!r}])
"""


def _alive(pid):
    """Whether `pid` runs; on Linux a zombie (ended, not yet reaped by whoever adopted it) counts as ended."""
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start_parent(mode):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    return parent, int(parent.stderr.readline())


def _end(parent, trainer):
    for pid in (trainer, parent.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    parent.wait()
    parent.stderr.close()


def test_sigterm_of_the_parent_ends_the_trainer_before_the_parent():
    parent, trainer = _start_parent("without_parent_death_signal")
    try:
        assert _alive(trainer)
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=10) == -signal.SIGTERM  # it still ends as SIGTERM ends a program
        assert not _alive(trainer)
    finally:
        _end(parent, trainer)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_parent_takes_the_trainer_with_it():
    parent, trainer = _start_parent("with_parent_death_signal")
    try:
        assert _alive(trainer)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(trainer) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(trainer)
    finally:
        _end(parent, trainer)


def test_run_child_returns_the_exit_code_and_the_last_line_and_restores_sigterm(capfd):
    code = "import sys; print('working', file=sys.stderr); print('error: no data', file=sys.stderr); sys.exit(3)"
    assert _study_runs.run_child([sys.executable, "-c", code]) == (3, "error: no data")
    assert capfd.readouterr().err == "working\nerror: no data\n"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
