"""TensorFlow's native (C++) start-up log, kept off the terminal by default.

On a machine without a GPU every TensorFlow start prints oneDNN, cudart and
absl "InitializeLog" lines while it loads, and a `failed call to cuInit`
error at its first op; they read like failures and hide the program's own
output. `TF_CPP_MIN_LOG_LEVEL=3` silences the later ones; the load-time ones
ignore it, so TensorFlow is imported here with the process's stderr (file
descriptor 2) sent to a temporary file, replayed only if the import fails.

Left alone when the user set TF_CPP_MIN_LOG_LEVEL, or asked for absl's
verbose logging (`-v N` / `--verbosity=N` with N >= 1). The level set here is
marked as ours in the environment, so that the apps this one starts (the
runs of apps.reproduce) are quiet the same way rather than taking it for the
user's.
"""

import importlib.util
import os
import sys
import tempfile

_VERBOSITY_NAMES = ("-v", "--v", "-verbosity", "--verbosity")
_SET_BY_US = "SNGM_KERAS_QUIET_NATIVE_LOG"


def verbose_logging_requested(argv):
    """Whether the command line holds absl's `--verbosity` (or `-v`) at 1 or more."""
    for i, arg in enumerate(argv[1:], start=1):
        name, sep, value = arg.partition("=")
        if name not in _VERBOSITY_NAMES:
            continue
        if not sep:
            value = argv[i + 1] if i + 1 < len(argv) else ""
        try:
            if int(value) >= 1:
                return True
        except ValueError:
            pass
    return False


def _import_with_stderr_captured(module):
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            importlib.import_module(module)
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            os.write(2, captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quiet_tensorflow_start(argv=None, environ=None):
    """Quiets TensorFlow's native log unless the user wants it; returns whether it did.

    Must run before anything imports TensorFlow (the apps package does it
    when imported)."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    user_set = "TF_CPP_MIN_LOG_LEVEL" in environ and environ.get(_SET_BY_US) != environ["TF_CPP_MIN_LOG_LEVEL"]
    if user_set or verbose_logging_requested(argv):
        return False
    environ["TF_CPP_MIN_LOG_LEVEL"] = environ[_SET_BY_US] = "3"
    if "tensorflow" not in sys.modules and importlib.util.find_spec("tensorflow") is not None:
        _import_with_stderr_captured("tensorflow")
    return True
