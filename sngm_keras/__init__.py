"""sngm_keras: SNGM for large-batch training in Keras 3, with its baselines.

`SNGM`, `MSGD` and `LARS` are Keras optimizers; `MicroBatchModel` trains with an
effective batch made of micro-batches, the gradient averaged over them and
across replicas (the mean gradient of the whole batch) before the one
optimizer step. Importing the package
registers its optimizers, schedules and layers with Keras' serialization, so
saved models load after `import sngm_keras`.

`sngm_keras.data` (input pipelines) and `sngm_keras.training` (training runs)
are imported on first use, so `import sngm_keras` stays light.
"""

import importlib

from sngm_keras import models, schedules
from sngm_keras.accumulation import MicroBatchModel
from sngm_keras.optimizers import LARS, MSGD, SNGM

__version__ = "0.1.0"
__all__ = ["SNGM", "MSGD", "LARS", "MicroBatchModel", "data", "models", "schedules", "training"]

_LAZY_SUBMODULES = ("data", "training")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
