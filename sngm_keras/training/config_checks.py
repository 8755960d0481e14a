"""What TrainConfig's validation reads from outside the configuration: the
dataset's folder, the run folder, and Keras' backend before Keras is
imported."""

import json
import os
import sys

from sngm_keras.dataset_names import DATASETS
from sngm_keras.training.errors import ConfigError


def keras_backend():
    """Keras' backend, without importing Keras (which imports the backend):
    KERAS_BACKEND, else the "backend" of keras.json in KERAS_HOME (default
    ~/.keras), else tensorflow, as keras/src/backend/config.py decides."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    backend = os.environ.get("KERAS_BACKEND")
    if backend:
        return backend
    if "KERAS_HOME" in os.environ:
        home = os.environ["KERAS_HOME"]
    else:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    try:
        with open(os.path.expanduser(os.path.join(home, "keras.json"))) as file:
            backend = json.load(file).get("backend")
    except (OSError, ValueError, AttributeError):
        backend = None
    return backend or "tensorflow"


def keras_verbosity(verbose):
    """Keras' `fit` verbosity for a configured one: None means a progress bar
    on a terminal and one line per epoch otherwise (a bar's control codes
    fill a log file)."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def check_dataset(dataset, data_dir):
    if dataset in DATASETS:
        if data_dir is not None and not os.path.isdir(os.path.expanduser(data_dir)):
            raise ConfigError("data_dir", f"{data_dir} is not a folder")
        return
    path = os.path.expanduser(str(dataset))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError("dataset", f"{dataset} is not a folder; give a folder holding train/ and test/")
    if not os.path.isdir(path):
        if os.sep in str(dataset) or str(dataset).startswith((".", "~")):
            raise ConfigError("dataset", f"no folder {dataset} (it should hold train/ and test/ of class folders)")
        raise ConfigError(
            "dataset",
            f"unknown {dataset!r}, and no folder of that name; choose one of {', '.join(DATASETS)} or a folder "
            "holding train/ and test/",
        )
    for split in ("train", _test_split(path)):
        if not os.path.isdir(os.path.join(path, split)):
            raise ConfigError("dataset", f"folder {dataset} has no {split}/ sub-folder of class folders")


def _test_split(path):
    """``test``, or ``val`` where only that one exists (ImageNet's usual name)."""
    has_test = os.path.isdir(os.path.join(path, "test"))
    return "val" if not has_test and os.path.isdir(os.path.join(path, "val")) else "test"


def check_model_dir(model_dir):
    """Checks without writing: the folder is created when the run claims it
    (`RunDir.claim`), which turns a refusal of the file system into a
    ConfigError too."""
    if not model_dir:
        raise ConfigError("model_dir", "must not be empty")
    path = os.path.abspath(os.path.expanduser(model_dir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError("model_dir", f"{model_dir} exists and is not a folder")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError("model_dir", f"{model_dir} cannot be created: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError("model_dir", f"{model_dir} is not writable")
