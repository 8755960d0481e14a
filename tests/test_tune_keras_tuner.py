"""What sngm_keras.tuning relies on in Keras Tuner beyond its documented API.

Each test fails when a Keras Tuner release stops behaving as the tuning code
expects, so an upgrade breaks here, by name, instead of resuming searches
wrongly or recording wrong wall times:

- `Oracle._retry_queue` (private): the trials create_trial runs again first,
  saved in oracle.json; `recover_interrupted` rewrites it after a kill.
- `Oracle.start_order` / `end_order`: lists saved in oracle.json, appended
  to in place by `recover_interrupted`.
- `on_trial_begin` before `on_trial_end` for the same trial: the tuners time
  each trial between the two.
"""

import json
import time
import types

import keras_tuner as kt
import pytest

from sngm_keras import tuning
from sngm_keras.training import TrainConfig


@pytest.fixture
def hypermodel(tmp_path):
    config = TrainConfig(
        dataset="sample",
        model="twoconv",
        optimizer="lars",
        micro_batch_size=250,
        epochs=1,
        verbose=0,
        model_dir=str(tmp_path / "search"),
    )
    return tuning.LargeBatchHyperModel(config, tuning.SearchSpace(batch_sizes=(500,)))


def make_tuner(hypermodel, tmp_path, project_name="p", max_trials=3):
    return tuning.make_tuner(
        hypermodel, "random", max_trials=max_trials, directory=str(tmp_path), project_name=project_name
    )


def saved_state(tmp_path, project_name="p"):
    with open(tmp_path / project_name / "oracle.json") as f:
        return json.load(f)


def test_retry_queue_is_what_reload_fills_create_trial_runs_first_and_oracle_json_saves(hypermodel, tmp_path):
    oracle = make_tuner(hypermodel, tmp_path).oracle
    assert type(oracle._retry_queue) is list and oracle._retry_queue == []
    assert type(oracle.start_order) is list and type(oracle.end_order) is list
    assert isinstance(oracle.ongoing_trials, dict)
    oracle.verbose = 0
    stale = (tmp_path / "p" / "oracle.json").read_text()
    started = oracle.create_trial("tuner0")
    assert saved_state(tmp_path)["ongoing_trials"] == {"tuner0": started.trial_id}

    # Keras Tuner itself (no recover_interrupted): a reload queues the trial
    # oracle.json lists as running, and create_trial runs it again first.
    plain = kt.RandomSearch(
        hypermodel=hypermodel,
        objective=kt.Objective("val_accuracy", "max"),
        max_trials=3,
        directory=str(tmp_path),
        project_name="p",
        overwrite=False,
        seed=1,
    ).oracle
    assert plain._retry_queue == [started.trial_id] and plain.ongoing_trials == {}
    plain.verbose = 0
    again = plain.create_trial("tuner0")
    assert again.trial_id == started.trial_id and plain._retry_queue == []
    assert again.hyperparameters.values == started.hyperparameters.values

    # recover_interrupted: a trial oracle.json does not list (killed between
    # trial.json and oracle.json) joins the queue, and oracle.json saves it.
    (tmp_path / "p" / "oracle.json").write_text(stale)
    oracle = make_tuner(hypermodel, tmp_path).oracle
    assert oracle._retry_queue == [started.trial_id] and oracle.start_order == [started.trial_id]
    state = saved_state(tmp_path)
    assert state["retry_queue"] == [started.trial_id] and state["start_order"] == [started.trial_id]
    oracle.verbose = 0
    assert oracle.create_trial("tuner0").trial_id == started.trial_id


def test_without_the_retry_queue_resuming_fails_loudly(hypermodel, tmp_path):
    oracle = make_tuner(hypermodel, tmp_path).oracle
    del oracle._retry_queue
    with pytest.raises(RuntimeError, match="no list _retry_queue"):
        tuning.recover_interrupted(oracle)


def test_search_times_each_trial_between_keras_tuners_hooks(hypermodel, tmp_path):
    tuner = make_tuner(hypermodel, tmp_path, max_trials=2)
    pause = 0.05

    def run_trial(trial, *args, **kwargs):  # a trial without training
        time.sleep(pause)
        return {"val_accuracy": 0.5}

    tuner.run_trial = run_trial
    tuner.search(verbose=0)
    assert sorted(tuner.oracle.trials) == ["0", "1"]
    for trial in tuner.oracle.trials.values():
        assert trial.status == "COMPLETED" and trial.metrics.get_best_value(tuning.WALL_SECONDS) >= pause
    rows = tuning.trial_rows(tuner)
    assert [row["trial"] for row in rows] == ["0", "1"] and all(row["wall_seconds"] >= pause for row in rows)
    assert (tmp_path / "p" / tuning.TRIALS_CSV).exists()

    # A trial ended without being begun is an error, not a wrong wall time.
    fresh = make_tuner(hypermodel, tmp_path, project_name="q")
    with pytest.raises(RuntimeError, match="without beginning it"):
        fresh.on_trial_end(types.SimpleNamespace(trial_id="0"))
