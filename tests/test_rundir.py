"""The run folder's claim: the same settings resume, other settings are refused."""

import dataclasses
import json
import os

import numpy as np
import pytest

from sngm_keras.training import ConfigError, TrainConfig, train
from sngm_keras.training.rundir import RunDir


def test_a_setting_added_after_a_run_started_counts_at_its_default(tmp_path):
    config = TrainConfig(model_dir=str(tmp_path / "run"))
    run_dir = RunDir(config.model_dir)
    run_dir.claim(config)
    recorded = json.load(open(run_dir.config))
    del recorded["pytorch_lars"], recorded["validation_size"]  # as written before these settings existed
    json.dump(recorded, open(run_dir.config, "w"))
    run_dir.write_history([])  # an epoch was trained: the folder holds a run
    run_dir.claim(config)  # resumes
    with pytest.raises(ConfigError, match="validation_size"):
        run_dir.claim(TrainConfig(model_dir=config.model_dir, validation_size=100))
    with pytest.raises(ConfigError, match="learning_rate"):
        run_dir.claim(TrainConfig(model_dir=config.model_dir, learning_rate=1.0))


def test_numpy_scalars_are_kept_as_python_values(tmp_path):
    # The checks take NumPy scalars as numbers; config.json must still be writable.
    config = TrainConfig(batch_size=np.int64(32), learning_rate=np.float32(0.5), model_dir=str(tmp_path / "run"))
    config.validate()
    assert type(config.batch_size) is int and config.batch_size == 32
    assert type(config.learning_rate) is float and config.learning_rate == 0.5
    RunDir(config.model_dir).claim(config)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["batch_size"] == 32
    with pytest.raises(ConfigError, match="--batch_size"):
        TrainConfig(batch_size=np.int64(2**40), model_dir=str(tmp_path / "big")).validate()


def test_a_checkpoint_the_run_cannot_continue_from_is_refused(tmp_path):
    """B = 1024 as 8 x 128 on 4,500 images: epochs of 5 updates over 4,480
    examples. A checkpoint whose optimizer state does not fit, one of 4 whole
    batches an epoch (a version that dropped the last partial batch), or one
    of other examples per epoch (other replicas) would put the rest of the
    run out of step: refused."""
    import glob
    import shutil

    import h5py

    config = TrainConfig(
        dataset="sample",
        model="twoconv",
        batch_size=1024,
        micro_batch_size=128,
        validation_size=500,
        epochs=2,
        max_updates=5,  # the end of epoch 1: one checkpoint, at an epoch's end
        verbose=0,
        model_dir=str(tmp_path / "run"),
    )
    assert train(config)["updates"] == 5
    state = json.load(open(tmp_path / "run" / "checkpoints" / "state.json"))
    assert (state["epoch"], state["updates"], state["steps_per_epoch"], state["examples_per_epoch"]) == (1, 5, 5, 4480)
    # Keras skips, with a warning only, optimizer variables that do not fit
    # (a checkpoint of a version whose optimizer kept other variables): the
    # resume must stop instead of training on with its momentum and schedule reset.
    shutil.copytree(tmp_path / "run", tmp_path / "optimizer")
    (checkpoint,) = glob.glob(str(tmp_path / "optimizer" / "checkpoints" / "*.weights.h5"))
    with h5py.File(checkpoint, "r+") as weights:  # one variable more than SNGM keeps
        variables = weights["optimizer"]["vars"]
        variables.copy(variables["0"], str(len(variables)))
    # As that version wrote it: its state names no digest of these bytes.
    edited = tmp_path / "optimizer" / "checkpoints" / "state.json"
    old_state = {k: v for k, v in json.load(open(edited)).items() if not k.startswith("weights_")}
    edited.write_text(json.dumps(old_state))
    for sidecar in glob.glob(str(tmp_path / "optimizer" / "checkpoints" / "*.state.json")):
        os.remove(sidecar)
    with (
        pytest.warns(UserWarning, match="Skipping variable loading for optimizer"),
        pytest.raises(ConfigError, match=r"--model_dir: .*optimizer state \(after 5 updates\) does not fit"),
    ):
        train(dataclasses.replace(config, max_updates=None, model_dir=str(tmp_path / "optimizer")))

    for name, edit, saved in [
        (
            "whole",
            lambda s: {k: v for k, v in s.items() if "per_epoch" not in k} | {"updates": 4},
            "4 updates over 4096",
        ),
        ("replicas", lambda s: s | {"examples_per_epoch": 4352}, "5 updates over 4352"),
    ]:
        shutil.copytree(tmp_path / "run", tmp_path / name)
        with open(tmp_path / name / "checkpoints" / "state.json", "w") as f:
            json.dump(edit(state), f)
        moved = dataclasses.replace(config, max_updates=None, model_dir=str(tmp_path / name))
        with pytest.raises(
            ConfigError, match=f"trained with epochs of {saved} examples, this run's epochs would take 5 over 4480"
        ):
            train(moved)
