"""How an app starts: its flags checked before TensorFlow loads, and
TensorFlow's native start-up log kept off the terminal.

`python -m apps.X` imports this package first. It *defers* the `__init__`
of `sngm_keras`, `sngm_keras.training` and `sngm_keras.tuning`, which import Keras and with it
TensorFlow (seconds, and the native log): the app's flag definitions and
its configuration checks use only the library's pure-Python modules
(`sngm_keras.training.config`, `.presets`, `sngm_keras.studies`, ...), so `--help` and a
mistake in the flags are answered at once. `finish_library_imports()` then
runs the deferred `__init__`s, TensorFlow first and quietly; any attribute
of a deferred package that is not there yet (`sngm_keras.SNGM`) runs it too.
A process that imported the library before the apps is left as it is.

TensorFlow's native log: on a machine without a GPU every TensorFlow start
prints oneDNN, cudart and absl "InitializeLog" lines while it loads, and a
`failed call to cuInit` error at its first op, whatever
TF_CPP_MIN_LOG_LEVEL says for the load-time ones. Unless absl's verbose
logging is asked for (`-v N` / `--verbosity=N`, N >= 1), TensorFlow is
imported with the process's stderr (file descriptor 2) sent to a temporary
file, replayed only if the import fails, TF_CPP_MIN_LOG_LEVEL is set to 3
for the rest, TensorFlow's Python logger shows warnings and errors only,
and absl's (TFDS writes through it) errors only. The apps an app starts (the runs of apps.reproduce) inherit the level.
"""

import importlib
import importlib.util
import logging
import os
import sys
import tempfile

# Packages whose __init__ imports Keras (and so TensorFlow), parents first.
DEFERRED_PACKAGES = ("sngm_keras", "sngm_keras.training", "sngm_keras.tuning")
_VERBOSITY_NAMES = ("-v", "--v", "-verbosity", "--verbosity")

_deferred = []  # (module, spec) of packages whose __init__ has not run yet


def defer_library_imports():
    """Puts the packages of DEFERRED_PACKAGES in `sys.modules` without running
    their `__init__`; does nothing for a package already imported."""
    for name in DEFERRED_PACKAGES:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        module = importlib.util.module_from_spec(spec)
        module.__getattr__ = _finishing_getattr(module)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
        _deferred.append((module, spec))


def _finishing_getattr(module):
    def __getattr__(name):
        if _is_submodule(module, name):  # `from sngm_keras import checks`: the import system imports it
            raise AttributeError(name)
        finish_library_imports()
        return getattr(module, name)

    return __getattr__


def _is_submodule(package, name):
    return any(
        os.path.exists(os.path.join(folder, name + ".py")) or os.path.isdir(os.path.join(folder, name))
        for folder in package.__path__
    )


def finish_library_imports(argv=None):
    """Imports TensorFlow (quietly, see `quiet_tensorflow_start`) and runs the
    deferred `__init__`s; idempotent."""
    if not _deferred:
        return
    quiet_tensorflow_start(argv)
    while _deferred:
        module, spec = _deferred.pop(0)
        del module.__getattr__
        spec.loader.exec_module(module)


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


def _installed(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # an import hook that refuses it
        return False


def quiet_tensorflow_start(argv=None, environ=None):
    """Quiets TensorFlow's log unless absl's verbose logging is asked for;
    returns whether it did. TF_CPP_MIN_LOG_LEVEL set by the user does not
    turn the quieting off (TensorFlow ignores it for its load-time lines);
    `--verbosity` is the way to see TensorFlow's own log."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    if verbose_logging_requested(argv):
        return False
    environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" not in sys.modules and _installed("tensorflow"):
        _import_with_stderr_captured("tensorflow")
    # TensorFlow's Python INFO lines (collective ops of a multi-worker run), and
    # TFDS's absl lines ("Constructing tf.data.Dataset", a "Variant folder ... has
    # no dataset_info.json" before the app's own line on missing data).
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    logging.getLogger("absl").setLevel(logging.ERROR)
    # JAX's "Starting/Connecting to JAX distributed service" of a multi-worker run.
    logging.getLogger("jax").setLevel(logging.WARNING)
    return True
