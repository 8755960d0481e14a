import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# The slow tests that `-m 'not slow'` (pyproject's default) left out, counted
# where tests are collected: here, or in each pytest-xdist worker, which
# sends its count back to the controller that writes the summary.
_slow_deselected = set()
_slow_deselected_by_workers = [0]


def pytest_deselected(items):
    _slow_deselected.update(item.nodeid for item in items if item.get_closest_marker("slow") is not None)
    for item in items[:1]:
        if hasattr(item.config, "workeroutput"):  # an xdist worker: its controller writes the summary
            item.config.workeroutput["slow_deselected"] = len(_slow_deselected)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    count = getattr(node, "workeroutput", {}).get("slow_deselected", 0)
    _slow_deselected_by_workers[0] = max(_slow_deselected_by_workers[0], count)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Says how to run the long group when the default left it out."""
    slow = max(len(_slow_deselected), _slow_deselected_by_workers[0])
    if slow and "not slow" in (config.getoption("markexpr") or ""):
        terminalreporter.write_line(f"{slow} slow tests deselected; run them with: python -m pytest -q -m slow")
