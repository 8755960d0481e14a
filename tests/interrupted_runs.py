"""Runs stopped as a kill would stop them, and what they leave: shared by
tests/test_step_checkpoints.py and the runs it starts in processes of
their own, on JAX or on two logical CPUs (`python -m tests.interrupted_runs
MODEL_DIR AT EVERY [OVERRIDES]`, which prints the records' digest). No TensorFlow import: it runs on either backend."""

import csv
import hashlib
import json
import os
import sys

import h5py
import keras
import numpy as np

from sngm_keras.training import TrainConfig, train
from sngm_keras.training.factory import inner_optimizer

# 4,500 training images in batches of 500 (2 micro-batches): epochs of 9
# updates; the rate is divided by 10 after epoch 2 (update 18).
CONFIG = dict(
    dataset="sample",
    model="twoconv",
    batch_size=500,
    micro_batch_size=250,
    epochs=3,
    validation_size=500,
    validations_per_epoch=2,
    lr_schedule="step",
    decay_epochs=(2,),
    deterministic=True,
    verbose=0,
)
TIMES = ("epoch_seconds", "wall_seconds")


class Killed(Exception):
    pass


class KillAfter(keras.callbacks.Callback):
    """Ends the process's training as a kill would, right after update `at`
    (the recorder before it has written whatever that update checkpoints)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(inner_optimizer(self.model.optimizer).iterations)) == self.at:
            raise Killed


def killed_and_resumed(model_dir, at, every, **overrides):
    """Trains until update `at`, stops there as a kill would, trains again;
    returns the state of the checkpoint it resumed from."""
    config = TrainConfig(model_dir=str(model_dir), checkpoint_every=every, **{**CONFIG, **overrides})
    try:
        train(config, extra_callbacks=[KillAfter(at)])
    except Killed:
        pass
    else:
        raise AssertionError(f"the run never reached update {at}")
    with open(os.path.join(model_dir, "checkpoints", "state.json")) as f:
        state = json.load(f)
    train(config)
    return state


def records(model_dir):
    """What a run leaves: weights, optimizer variables, history and validation rows (times aside)."""
    model = keras.saving.load_model(os.path.join(model_dir, "final.keras"), compile=False)
    with open(os.path.join(model_dir, "checkpoints", "state.json")) as f:
        state = json.load(f)
    with h5py.File(os.path.join(model_dir, "checkpoints", state["weights"])) as f:
        optimizer = [np.array(f["optimizer"]["vars"][k]) for k in sorted(f["optimizer"]["vars"], key=int)]
    with open(os.path.join(model_dir, "history.csv")) as f:
        history = [{k: v for k, v in row.items() if k not in TIMES} for row in csv.DictReader(f)]
    with open(os.path.join(model_dir, "validation.csv")) as f:
        validation = f.read()
    return [np.asarray(w) for w in model.get_weights()], optimizer, history, validation


def assert_same_run(a, b):
    for x, y in zip(a[0] + a[1], b[0] + b[1], strict=True):
        np.testing.assert_array_equal(x, y)
    assert a[2] == b[2] and a[3] == b[3]


def digest(run_records):
    """One hash of a run's records, to compare runs across processes."""
    weights, optimizer, history, validation = run_records
    text = json.dumps([[np.asarray(a).tobytes().hex() for a in weights + optimizer], history, validation])
    return hashlib.sha256(text.encode()).hexdigest()


if __name__ == "__main__":  # MODEL_DIR AT EVERY [OVERRIDES as JSON]: AT 0 for the uninterrupted run
    model_dir, at, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    overrides = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    if at:
        state = killed_and_resumed(model_dir, at, every, **overrides)
        print(json.dumps({"resumed_from": [state["epoch"], state.get("batch", 0), state["updates"]]}))
    else:
        train(TrainConfig(model_dir=model_dir, **{**CONFIG, **overrides}))
    with open(os.path.join(model_dir, "summary.json")) as f:
        replicas = json.load(f)["replicas"]
    print(json.dumps({"digest": digest(records(model_dir)), "replicas": replicas, "backend": keras.backend.backend()}))
