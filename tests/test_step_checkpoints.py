"""Checkpoints within epochs (--checkpoint_every) and stops on a signal: a
run killed anywhere resumes to exactly the weights, optimizer state and
records of the run that was never stopped."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sngm_keras.training import ConfigError, TrainConfig, train
from tests.helpers import run_alone
from tests.interrupted_runs import CONFIG, KillAfter, Killed, assert_same_run, killed_and_resumed, records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    train(TrainConfig(model_dir=str(model_dir), **CONFIG))
    return records(str(model_dir))


# One Mean metric on two logical-CPU replicas: 1e8 on replica 0 and 0 on 1
# before a checkpoint, 3 on each after. In float32 (spacing 8 at 1e8, 4 at
# 5e7) 1e8 + 3 is 1e8, while the even spread 5e7 + 3 is 50,000,004.
SPREAD_SUMS = """
import json, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from sngm_keras.training.callbacks import add_epoch_sums, epoch_sums
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

class Run:  # what the callbacks read of a model
    def __init__(self):
        with strategy.scope():
            self.metrics = [keras.metrics.Mean()]
        self.distribute_strategy = strategy

def update(run, per_replica):
    def add():
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        run.metrics[0].update_state(tf.gather(tf.constant(per_replica), replica))
    tf.function(lambda: strategy.run(add))()

def total(run):
    return float(run.metrics[0].total.numpy())

before, after = [1e8, 0.0], [3.0, 3.0]
uninterrupted, checkpointed = Run(), Run()
update(uninterrupted, before)
update(uninterrupted, after)
update(checkpointed, before)
sums, replica_sums = epoch_sums(checkpointed)
resumed = {}
for name, parts in (("per_replica", replica_sums), ("whole", None)):
    run = Run()
    update(run, after)  # the first update after the resume, then the sums added back
    add_epoch_sums(run, sums, parts)
    resumed[name] = total(run)
print(json.dumps({"uninterrupted": total(uninterrupted), "sums": sums, "replica_sums": replica_sums, **resumed}))
"""


def test_on_two_replicas_each_gets_back_its_own_part_of_the_epoch_sums():
    result = subprocess.run([sys.executable, "-c", SPREAD_SUMS], capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["sums"] == [[1e8, 2.0]] and out["replica_sums"] == [[[1e8, 0.0], [1.0, 1.0]]]
    assert out["uninterrupted"] == out["per_replica"] == 1e8
    # The whole sum added back spreads over the replicas: the epoch's later sums round otherwise.
    assert out["whole"] == 100_000_008.0


def test_killed_within_an_epoch_resumes_to_the_uninterrupted_run(tmp_path, uninterrupted):
    state = killed_and_resumed(tmp_path / "run", at=13, every=4)
    assert (state["epoch"], state["batch"], state["updates"]) == (1, 3, 12)  # epoch 2, batch 3 of 9
    assert_same_run(records(str(tmp_path / "run")), uninterrupted)
    # Kept after the finished run: the last epoch's checkpoint (none within epochs follow it).
    names = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
    assert names == ["epoch-0003.state.json", "epoch-0003.weights.h5", "state.json"]


@pytest.mark.slow
@pytest.mark.parametrize("at", [1, 9, 10, 17, 19])  # first batch; an epoch's end; next start; its last; past the decay
def test_killed_anywhere_resumes_to_the_uninterrupted_run(tmp_path, uninterrupted, at):
    state = killed_and_resumed(tmp_path / "run", at=at, every=1)
    # An epoch's last update is checkpointed at the epoch's end, which the kill at 9 cut off.
    resumed_at = at - 1 if at % 9 == 0 else at
    assert state["updates"] == resumed_at and state.get("batch", 0) == resumed_at % 9
    assert_same_run(records(str(tmp_path / "run")), uninterrupted)


def test_checkpoints_kept_and_an_incomplete_one_passed_over(tmp_path, uninterrupted, caplog):
    model_dir = tmp_path / "run"
    config = TrainConfig(model_dir=str(model_dir), checkpoint_every=2, keep_checkpoints=3, **CONFIG)
    with pytest.raises(Killed):
        train(config, extra_callbacks=[KillAfter(17)])  # update 17: the newest checkpoint is 16's
    names = sorted(n for n in os.listdir(model_dir / "checkpoints") if n.endswith(".weights.h5"))
    assert names == [
        "epoch-0001.weights.h5",
        "update-000000012.weights.h5",
        "update-000000014.weights.h5",
        "update-000000016.weights.h5",
    ]
    newest = model_dir / "checkpoints" / "update-000000016.weights.h5"
    newest.write_bytes(newest.read_bytes()[:-100])  # a copy cut short
    with caplog.at_level("WARNING", logger="sngm_keras"):
        train(config)
    assert "checkpoint update-000000016.weights.h5 is incomplete; resuming from the one before it" in caplog.text
    assert_same_run(records(str(model_dir)), uninterrupted)


def test_checkpoint_every_longer_than_the_run_is_refused(tmp_path):
    config = TrainConfig(model_dir=str(tmp_path / "run"), checkpoint_every=28, **CONFIG)
    with pytest.raises(ConfigError, match=r"^--checkpoint_every: 28 updates is more than the run's 27; use"):
        train(config)
    assert not (tmp_path / "run").exists()
    assert train(dataclasses.replace(config, checkpoint_every=2, max_updates=2))["updates"] == 2  # as long: accepted
    # The default (every 100) is no mistake in a shorter run: it writes no checkpoint within its epochs.
    default = dataclasses.replace(config, checkpoint_every=None, model_dir=str(tmp_path / "default"))
    assert default.updates_between_checkpoints() == 100
    assert train(default)["updates"] == 27
    assert not [n for n in os.listdir(tmp_path / "default" / "checkpoints") if n.startswith("update-")]


@pytest.mark.slow
def test_sigterm_checkpoints_the_update_in_flight_and_the_rerun_ends_as_the_uninterrupted_run(tmp_path, uninterrupted):
    flags = [f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in CONFIG.items()]
    command = [sys.executable, "-m", "apps.train", *flags, f"--model_dir={tmp_path / 'run'}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    history = tmp_path / "run" / "history.csv"
    deadline = time.time() + 600
    while not history.exists() and process.poll() is None and time.time() < deadline:  # stop it in its second epoch
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    sent = time.time()
    out, err = process.communicate(timeout=300)
    assert process.returncode == 143, err[-2000:]
    assert time.time() - sent < 30
    state = json.load(open(tmp_path / "run" / "checkpoints" / "state.json"))
    # The signal lands within epoch 2, or at epoch 1's end while its history row was being written.
    where = f"epoch 2, batch {state['batch']} of 9" if state.get("batch") else "the end of epoch 1"
    assert err.splitlines() == [
        f"stopped: SIGTERM: checkpointed at update {state['updates']} ({where}) in {tmp_path / 'run'}; rerun the "
        "same command to resume there"
    ]
    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert_same_run(records(str(tmp_path / "run")), uninterrupted)


@pytest.mark.slow
def test_on_jax_killed_within_an_epoch_resumes_to_the_uninterrupted_run(tmp_path):
    (uninterrupted,) = run_alone("jax", tmp_path / "whole", 0, 0)
    assert uninterrupted["backend"] == "jax"
    resumed, result = run_alone("jax", tmp_path / "run", 13, 4)
    assert resumed == {"resumed_from": [1, 3, 12]} and result == uninterrupted


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_replicas_with_micro_batches_killed_within_an_epoch_resume_to_the_uninterrupted_run(tmp_path, backend):
    # B = 500 on two logical CPUs: 250 a replica, as two micro-batches of 125.
    two = json.dumps({"strategy": "mirrored", "num_cpu_devices": 2, "micro_batch_size": 125})
    (uninterrupted,) = run_alone(backend, tmp_path / "whole", 0, 0, two)
    assert uninterrupted["replicas"] == 2 and uninterrupted["backend"] == backend
    resumed, result = run_alone(backend, tmp_path / "run", 13, 4, two)
    assert resumed == {"resumed_from": [1, 3, 12]} and result == uninterrupted


def test_a_run_stopped_by_max_updates_within_an_epoch_continues_from_there(tmp_path, uninterrupted):
    model_dir = tmp_path / "run"
    config = TrainConfig(model_dir=str(model_dir), checkpoint_every=0, **CONFIG)
    train(dataclasses.replace(config, max_updates=13))  # epoch 2, batch 4 of 9
    with open(model_dir / "checkpoints" / "state.json") as f:
        state = json.load(f)
    assert (state["updates"], state["epoch"], state["batch"]) == (13, 1, 4)
    train(config)
    assert_same_run(records(str(model_dir)), uninterrupted)
