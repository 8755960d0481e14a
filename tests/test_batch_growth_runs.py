"""Training runs whose batch grows with the noise scale (--batch_growth):
what they record, every epoch on the same examples, and resumes after a
kill that end as the uninterrupted run, on one device, on two logical-CPU
replicas and on JAX."""

import csv
import json
import os

import pytest

from sngm_keras.training import TrainConfig, train
from tests.helpers import max_diff, run_alone
from tests.interrupted_runs import CONFIG, assert_same_run, killed_and_resumed, records

# From B = 250 (micro-batches of 125) on the sample's 4,500 training images:
# a factor so large that the first measure already asks for the maximum,
# 1,000. Epoch 1 takes 18 updates at 250, epochs 2 and 3 five at 1,000 (four
# of 1,000 and one of 500), the rate sqrt(1000 / 250) = 2 times the base's
# from epoch 2 on, and the base divided by 10 after epoch 2 (update 23).
GROWTH = dict(
    batch_size=250,
    micro_batch_size=125,
    batch_growth="noise_scale",
    batch_growth_factor=1e4,
    max_batch_size=1000,
    lr_batch_scaling="sqrt",
)


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("grown"))
    train(TrainConfig(model_dir=model_dir, **{**CONFIG, **GROWTH}))
    return model_dir


def final_weights(model_dir):
    import keras

    return keras.saving.load_model(os.path.join(model_dir, "final.keras"), compile=False).get_weights()


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_grown_run_trains_every_epoch_on_the_same_examples_and_records_its_batches(grown):
    with open(os.path.join(grown, "summary.json")) as f:
        summary = json.load(f)
    history = _rows(os.path.join(grown, "history.csv"))
    assert [int(r["batch_size"]) for r in history] == [250, 1000, 1000]
    assert [int(r["updates"]) for r in history] == [18, 23, 28]
    assert [float(r["grad_per_n"]) for r in history] == [1.0, 2.0, 3.0]  # 4,500 examples each
    # Each row's rate is the next update's: the base's 0.2, then 2 x 0.02 after the decay at epoch 2.
    assert [float(r["learning_rate"]) for r in history] == pytest.approx([0.2, 0.04, 0.04])
    assert summary["epoch_batch_sizes"] == [250, 1000, 1000] and summary["updates"] == 28
    assert summary["batch_sizes_used"] == "250 (epoch 1), 1000 (epochs 2-3)"
    assert summary["epoch_learning_rates"] == pytest.approx([0.2, 0.04, 0.04]) and summary["grad_per_n"] == 3.0
    # The validation split twice an epoch, at the places of each epoch's batch: 9 of 18, 2 of 5 (and 4 of 5).
    assert [int(r["updates"]) for r in _rows(os.path.join(grown, "validation.csv"))] == [9, 18, 20, 22, 23, 25, 27, 28]
    with open(os.path.join(grown, "checkpoints", "state.json")) as f:
        state = json.load(f)
    assert state["epoch_batch_sizes"][:3] == [250, 1000, 1000] and state["examples_per_epoch"] == 4500
    assert os.path.exists(os.path.join(grown, "noise_scale.png"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "at,every,resumed_from",
    [(21, 2, [1, 2, 20]), (19, 0, [1, 0, 18])],
    ids=["within-the-first-grown-epoch", "at-the-growth"],
)
def test_killed_after_the_growth_resumes_to_the_uninterrupted_run(tmp_path, grown, at, every, resumed_from):
    state = killed_and_resumed(tmp_path / "run", at, every, **GROWTH)
    assert [state["epoch"], state.get("batch", 0), state["updates"]] == resumed_from
    assert state["epoch_batch_sizes"] == [250, 1000]
    assert_same_run(records(str(tmp_path / "run")), records(grown))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_replicas_grow_alike_and_resume_to_the_uninterrupted_run(tmp_path, backend):
    # B = 500 on two logical CPUs as micro-batches of 125: every batch is 250 x 2^k, at most 1,000.
    # At a small rate, so that training does not amplify the rounding of
    # the sums' order between one device and two replicas below.
    small = {**GROWTH, "batch_size": 500, "learning_rate": 0.01}
    two = json.dumps({**small, "strategy": "mirrored", "num_cpu_devices": 2})
    (uninterrupted,) = run_alone(backend, tmp_path / "two", 0, 0, two)
    assert uninterrupted["replicas"] == 2
    resumed, result = run_alone(backend, tmp_path / "run", 13, 2, two)
    assert resumed == {"resumed_from": [1, 3, 12]} and result == uninterrupted
    # One device against two replicas, the same batches of the same
    # micro-batches: the same growth, and the weights but for the order of
    # the sums: 7e-7 apart on TensorFlow, 1.05e-5 on JAX (at the rate 0.2 of
    # the runs above, 3e-3, and 6e-3 for a fixed batch too).
    (one,) = run_alone(backend, tmp_path / "one", 0, 0, json.dumps(small))
    assert one["replicas"] == 1
    for folder in ("one", "two", "run"):
        with open(tmp_path / folder / "summary.json") as f:
            assert json.load(f)["epoch_batch_sizes"] == [500, 1000, 1000]
    bound = 1e-5 if backend == "tensorflow" else 1e-4
    assert max_diff(final_weights(tmp_path / "two"), final_weights(tmp_path / "one")) < bound


@pytest.mark.slow
def test_on_jax_killed_after_the_growth_resumes_to_the_uninterrupted_run(tmp_path):
    growth = json.dumps(GROWTH)
    (uninterrupted,) = run_alone("jax", tmp_path / "whole", 0, 0, growth)
    resumed, result = run_alone("jax", tmp_path / "run", 21, 2, growth)
    assert resumed == {"resumed_from": [1, 2, 20]} and result == uninterrupted
    with open(tmp_path / "whole" / "summary.json") as f:
        assert json.load(f)["epoch_batch_sizes"] == [250, 1000, 1000]


def test_a_run_recorded_before_the_batch_size_column_resumes_with_it_filled(tmp_path):
    # A fixed-batch run stopped after epoch 1, its history.csv as it was written before the column existed.
    config = TrainConfig(
        model_dir=str(tmp_path / "run"), **{**CONFIG, "epochs": 2, "decay_epochs": (1,), "max_updates": 9}
    )
    train(config)
    path = tmp_path / "run" / "history.csv"
    old = [{k: v for k, v in row.items() if k != "batch_size"} for row in _rows(path)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(old[0]))
        writer.writeheader()
        writer.writerows(old)
    train(TrainConfig(model_dir=str(tmp_path / "run"), **{**CONFIG, "epochs": 2, "decay_epochs": (1,)}))
    assert [(r["epoch"], r["batch_size"]) for r in _rows(path)] == [("1", "500"), ("2", "500")]
