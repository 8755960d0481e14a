"""What a run's report needs to name its code and time: the package version,
the git commit of a source checkout, and UTC timestamps."""

import datetime
import os
import subprocess

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def utc_now():
    """The current time, UTC, ISO 8601 to the second (e.g. 2026-01-31T12:00:00Z)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def package_version():
    from sngm_keras import __version__

    return __version__


def _git(*args):
    result = subprocess.run(["git", "-C", _PACKAGE_DIR, *args], capture_output=True, text=True, timeout=10)
    if result.returncode:
        raise OSError(result.stderr.strip())
    return result.stdout.strip()


def git_commit():
    """`{"commit": sha, "dirty": bool}` when the package is run from a git
    checkout of this project (an editable install), else None; never raises."""
    try:
        top = _git("rev-parse", "--show-toplevel")
        # An installed copy may sit inside some unrelated repository.
        if os.path.realpath(top) != os.path.realpath(os.path.dirname(_PACKAGE_DIR)):
            return None
        commit = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}
