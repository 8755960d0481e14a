"""The Keras Tuner search: its space, the hypermodel, and apps.tune end to end
(kill and resume without redoing trials, training from best.flags, bad input)."""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import keras_tuner as kt
import pytest
from keras_tuner.src import utils as kt_utils

from sngm_keras import tuning
from sngm_keras.accumulation import MicroBatchModel
from sngm_keras.data import load_arrays
from sngm_keras.optimizers import LARS
from sngm_keras.training import ConfigError, TrainConfig
from sngm_keras.tuning import search

try:
    import scipy.optimize  # noqa: F401
    import sklearn.gaussian_process  # noqa: F401

    BAYESIAN = True
except ImportError:  # keras-tuner[bayesian] not installed
    BAYESIAN = False
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--dataset=sample",
    "--model=twoconv",
    "--batch_sizes=500",
    "--micro_batch_size=250",
    "--epochs_per_trial=1",
    "--verbose=0",
]


def run_app(module, *args, wait=True, timeout=300):
    command = [sys.executable, "-m", module, *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def trial_files(project):
    """trial id -> the parsed trial.json, for every trial Keras Tuner recorded."""
    trials = {}
    if not os.path.isdir(project):
        return trials
    for name in sorted(os.listdir(project)):
        path = os.path.join(project, name, "trial.json")
        if name.startswith("trial_") and os.path.exists(path):
            try:
                with open(path) as f:
                    trial = json.load(f)
            except ValueError:  # being written
                continue
            trials[trial["trial_id"]] = trial
    return trials


def completed(project):
    return {i: t for i, t in trial_files(project).items() if t["status"] == "COMPLETED"}


def wait_for_completed(project, count, process, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(completed(project)) >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"the search ended before it could be killed: {process.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError("no trial completed in time")


# -- the search space ----------------------------------------------------------


def test_default_space_is_the_papers_and_flags_override_it():
    space = tuning.SearchSpace()
    assert space.lr_range == (0.1, 4.0) and space.momentum_choices == (0.9, 0.95, 0.99)
    assert space.power_range == (1.0, 2.0) and space.wd_range == (1e-5, 1e-3) and space.batch_sizes == (4096,)
    assert tuning.default_batch_sizes("sample") == (500,) and tuning.default_batch_sizes("cifar10") == (4096,)

    hp = kt.HyperParameters()
    values = space.validate().fill(hp)
    assert set(values) == set(tuning.HYPERPARAMETERS)
    declared = {p.name: p for p in hp.space}
    lr, wd, power = declared["learning_rate"], declared["weight_decay"], declared["power"]
    assert (lr.min_value, lr.max_value, lr.sampling) == (0.1, 4.0, "log")
    assert (wd.min_value, wd.max_value, wd.sampling) == (1e-5, 1e-3, "log")
    assert (power.min_value, power.max_value, power.sampling) == (1.0, 2.0, "linear")
    assert list(declared["momentum"].values) == [0.9, 0.95, 0.99]
    assert type(declared["batch_size"]).__name__ == "Fixed" and values["batch_size"] == 4096

    hp = kt.HyperParameters()
    tuning.SearchSpace(
        lr_range=(0.5, 0.5), momentum_choices=(0.9,), power_range=(1.5, 3), wd_range=(0, 0), batch_sizes=(250, 500)
    ).validate().fill(hp)
    declared = {p.name: p for p in hp.space}
    assert hp.values["learning_rate"] == 0.5 and type(declared["learning_rate"]).__name__ == "Fixed"
    assert hp.values["momentum"] == 0.9 and hp.values["weight_decay"] == 0.0
    assert declared["power"].max_value == 3.0 and list(declared["batch_size"].values) == [250, 500]
    # Random draws stay inside the ranges.
    rng_space = tuning.SearchSpace(batch_sizes=(500,))
    hp = kt.HyperParameters()
    rng_space.fill(hp)
    for seed in range(20):
        sample = {p.name: p.random_sample(seed) for p in hp.space}
        assert 0.1 <= sample["learning_rate"] <= 4 and 1e-5 <= sample["weight_decay"] <= 1e-3
        assert 1 <= sample["power"] <= 2 and sample["momentum"] in (0.9, 0.95, 0.99)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(lr_range=()), "lr_range"),
        (dict(lr_range=(4.0, 0.1)), "lr_range"),
        (dict(lr_range=(0.0, 1.0)), "lr_range"),
        (dict(lr_range=(0.1, 1.0, 2.0)), "lr_range"),
        (dict(lr_range=(0.1, float("nan"))), "lr_range"),
        (dict(power_range=(2.0, 1.0)), "power_range"),
        (dict(wd_range=(0.0, 1e-3)), "wd_range"),
        (dict(wd_range=()), "wd_range"),
        (dict(momentum_choices=()), "momentum_choices"),
        (dict(momentum_choices=(0.9, 1.0)), "momentum_choices"),
        (dict(momentum_choices=(0.9, 0.9)), "momentum_choices"),
        (dict(batch_sizes=()), "batch_sizes"),
        (dict(batch_sizes=(0,)), "batch_sizes"),
    ],
)
def test_bad_space_names_its_flag(kwargs, field):
    with pytest.raises(ConfigError) as error:
        tuning.SearchSpace(**kwargs).validate()
    assert error.value.field == field and str(error.value).startswith(f"--{field}: ")


def test_search_options():
    tuning.check_search_options("hyperband", 1, "val_loss")
    for args, field in [
        (("grid", 3, "val_accuracy"), "tuner"),
        (("random", 0, "val_accuracy"), "max_trials"),
        (("random", 3, "test_accuracy"), "objective"),
    ]:
        with pytest.raises(ConfigError) as error:
            tuning.check_search_options(*args)
        assert error.value.field == field
    with pytest.raises(ConfigError, match="test split is never used"):
        tuning.check_search_options("random", 3, "test_accuracy")


# -- the hypermodel ------------------------------------------------------------


def base_config(tmp_path, **overrides):
    values = dict(
        dataset="sample",
        model="twoconv",
        optimizer="lars",
        micro_batch_size=250,
        epochs=2,
        verbose=0,
        model_dir=str(tmp_path / "search"),
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_hypermodel_holds_out_training_images_and_builds_the_apps_model(tmp_path):
    hypermodel = tuning.LargeBatchHyperModel(
        base_config(tmp_path), tuning.SearchSpace(batch_sizes=(500, 1000)), validation_fraction=0.1
    )
    assert (hypermodel.num_train, hypermodel.num_validation) == (4500, 500)
    # The held-out images are training images, none of them is trained on, and the test split is unused.
    arrays = load_arrays("sample")

    def digests(images):
        return {hashlib.sha1(image.tobytes()).hexdigest() for image in images}

    train, held, test = digests(arrays.x_train), digests(hypermodel.splits.x_test), digests(arrays.x_test)
    kept = digests(hypermodel.splits.x_train)
    assert held <= train and not held & kept and not held & test and len(held | kept) == len(train)

    hp = kt.HyperParameters()
    hypermodel.space.fill(hp)
    hp.values.update(learning_rate=0.7, momentum=0.95, power=1.5, weight_decay=2e-4, batch_size=1000)
    model = hypermodel.build(hp)
    assert isinstance(model, MicroBatchModel) and model.micro_batch_size == 250
    assert isinstance(model.optimizer, LARS) and model.optimizer.momentum == 0.95
    schedule = model.optimizer.get_config()["learning_rate"]["config"]
    assert schedule["initial_learning_rate"] == 0.7 and schedule["power"] == 1.5
    # epochs per trial x steps of the kept images: 4 of 1000, then one of 500 (two micro-batches of 250)
    assert schedule["total_steps"] == 2 * 5
    config = hypermodel.trial_config(hp)
    assert (config.batch_size, config.weight_decay, config.optimizer, config.epochs) == (1000, 2e-4, "lars", 2)
    assert model.model.output_shape == (None, 10)

    for overrides, space, field in [
        ({}, tuning.SearchSpace(batch_sizes=(4800,)), "batch_sizes"),  # more than the 4500 kept
        ({}, tuning.SearchSpace(batch_sizes=(500, 300)), "batch_sizes"),  # 300 is not a multiple of 250
        ({"dataset": "imagenet2012"}, tuning.SearchSpace(), "dataset"),
        ({"lr_schedule": "step"}, tuning.SearchSpace(batch_sizes=(500,)), "lr_schedule"),
    ]:
        with pytest.raises(ConfigError) as error:
            tuning.LargeBatchHyperModel(base_config(tmp_path, **overrides), space)
        assert error.value.field == field, str(error.value)


def test_make_tuner_claims_its_folder_and_refuses_other_settings(tmp_path):
    space = tuning.SearchSpace(batch_sizes=(500,))
    hypermodel = tuning.LargeBatchHyperModel(base_config(tmp_path), space)
    tuner = tuning.make_tuner(hypermodel, "hyperband", max_trials=4, directory=str(tmp_path), project_name="p")
    assert isinstance(tuner, kt.Hyperband) and tuner.oracle.max_trials == 4
    settings = json.load(open(tmp_path / "p" / "search.json"))
    assert settings["tuner"] == "hyperband" and settings["lr_range"] == [0.1, 4.0]
    assert settings["epochs_per_trial"] == 2 and settings["optimizer"] == "lars"
    with pytest.raises(ConfigError, match="--tuner: 'hyperband' there, 'random' now") as error:
        tuning.make_tuner(hypermodel, "random", max_trials=4, directory=str(tmp_path), project_name="p")
    assert error.value.field == "project_name"
    other = tuning.LargeBatchHyperModel(base_config(tmp_path, epochs=3), space)
    with pytest.raises(ConfigError, match="--epochs_per_trial: 2 there, 3 now"):
        tuning.make_tuner(other, "hyperband", max_trials=4, directory=str(tmp_path), project_name="p")
    tuner = tuning.make_tuner(
        hypermodel, "random", max_trials=2, directory=str(tmp_path), project_name="p", overwrite=True
    )
    assert isinstance(tuner, kt.RandomSearch) and tuner.oracle.seed == 1  # --seed + 1: 0 is "random" to Keras Tuner
    assert json.load(open(tmp_path / "p" / "search.json"))["tuner"] == "random"
    if BAYESIAN:
        tuner = tuning.make_tuner(hypermodel, "bayesian", max_trials=2, directory=str(tmp_path), project_name="b")
        assert isinstance(tuner, kt.BayesianOptimization)
    else:  # keras-tuner[bayesian] not installed: one clear error
        with pytest.raises(ConfigError, match="keras-tuner\\[bayesian\\]") as error:
            tuning.make_tuner(hypermodel, "bayesian", max_trials=2, directory=str(tmp_path), project_name="b")
        assert error.value.field == "tuner" and not (tmp_path / "b").exists()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "oracle.json").write_text("{}")
    with pytest.raises(ConfigError, match="unknown search"):
        tuning.make_tuner(hypermodel, "random", max_trials=2, directory=str(tmp_path), project_name="foreign")


def test_resume_trusts_the_trial_files_after_a_kill_between_writes(tmp_path):
    hypermodel = tuning.LargeBatchHyperModel(base_config(tmp_path), tuning.SearchSpace(batch_sizes=(500,)))

    def reload():
        return tuning.make_tuner(hypermodel, "random", max_trials=3, directory=str(tmp_path), project_name="p").oracle

    oracle = reload()
    oracle.verbose = 0
    first = oracle.create_trial("tuner0")  # trial.json (RUNNING), then oracle.json listing it as running
    oracle.update_trial(first.trial_id, {"val_accuracy": 0.5})
    first.status = "COMPLETED"
    oracle.score_trial(first)
    oracle._save_trial(first)  # its trial.json says COMPLETED; killed before oracle.json was written again
    stale = (tmp_path / "p" / "oracle.json").read_text()

    oracle = reload()
    assert oracle.trials["0"].status == "COMPLETED" and oracle._retry_queue == []  # not run again
    oracle.verbose = 0
    second = oracle.create_trial("tuner0")
    (tmp_path / "p" / "oracle.json").write_text(stale)  # killed after trial_1/trial.json, before oracle.json

    oracle = reload()
    assert oracle.start_order == ["0", "1"] and oracle._retry_queue == ["1"]
    oracle.verbose = 0
    again = oracle.create_trial("tuner0")  # the started trial runs (again), with its values
    assert again.trial_id == "1" and again.hyperparameters.values == second.hyperparameters.values


def test_keras_tuner_state_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    hypermodel = tuning.LargeBatchHyperModel(base_config(tmp_path), tuning.SearchSpace(batch_sizes=(500,)))
    tuner = tuning.make_tuner(hypermodel, "random", max_trials=3, directory=str(tmp_path), project_name="p")
    path = tmp_path / "p" / "oracle.json"
    before = path.read_text()
    assert json.loads(before)["start_order"] == []
    tuner.oracle.start_order.append("0")

    class Killed(Exception):
        pass

    def killed(*args):
        raise Killed

    with search.atomic_json_writes():
        monkeypatch.setattr(os, "replace", killed)  # stopped after writing the new state, before it replaced the old
        with pytest.raises(Killed):
            tuner.oracle.save()
        monkeypatch.undo()
    assert path.read_text() == before
    assert kt_utils.save_json is not None and kt_utils.save_json.__module__ == "keras_tuner.src.utils"


@pytest.mark.parametrize("name", ["oracle.json", "tuner0.json"])
def test_a_damaged_state_file_is_named_and_kept(tmp_path, name):
    hypermodel = tuning.LargeBatchHyperModel(base_config(tmp_path), tuning.SearchSpace(batch_sizes=(500,)))
    tuning.make_tuner(hypermodel, "random", max_trials=3, directory=str(tmp_path), project_name="p")
    (tmp_path / "p" / name).write_text("")  # what Keras Tuner's own writer leaves when killed mid-write
    with pytest.raises(ConfigError) as error:
        tuning.make_tuner(hypermodel, "random", max_trials=3, directory=str(tmp_path), project_name="p")
    assert error.value.field == "project_name"
    assert str(error.value).endswith(
        f"{tmp_path / 'p' / name} is empty or damaged (the search was stopped while writing it); "
        "use another --project_name, or --overwrite to discard this search"
    )
    assert (tmp_path / "p" / name).read_text() == "" and (tmp_path / "p" / "search.json").exists()


# -- apps.tune end to end ----------------------------------------------------------


@pytest.mark.slow
def test_search_killed_and_resumed_then_trained_from_best_flags(tmp_path):
    args = [*TINY, "--tuner=random", "--max_trials=3", f"--directory={tmp_path}", "--project_name=search"]
    project = str(tmp_path / "search")
    process = run_app("apps.tune", *args, wait=False)
    wait_for_completed(project, 1, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = trial_files(project)
    done = {i: t for i, t in before.items() if t["status"] == "COMPLETED"}
    assert 1 <= len(done) < 3, before
    interrupted = {i: t for i, t in before.items() if t["status"] == "RUNNING"}

    result = run_app("apps.tune", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len(done)} trial(s) completed" in result.stdout
    after = trial_files(project)
    assert sorted(after) == ["0", "1", "2"] and all(t["status"] == "COMPLETED" for t in after.values())
    for trial_id, trial in done.items():  # finished trials were not run again
        assert after[trial_id] == trial
    for trial_id, trial in interrupted.items():  # the interrupted one ran again, with its values
        assert after[trial_id]["hyperparameters"]["values"] == trial["hyperparameters"]["values"]

    with open(os.path.join(project, "trials.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["trial"] for r in rows] == ["0", "1", "2"]
    for row in rows:
        trial = after[row["trial"]]
        assert float(row["score"]) == pytest.approx(trial["score"])
        assert float(row["learning_rate"]) == trial["hyperparameters"]["values"]["learning_rate"]
        assert float(row["wall_seconds"]) > 0 and row["batch_size"] == "500" and row["epochs"] == "1"
    best_id = max(after, key=lambda i: after[i]["score"])
    assert [r["trial"] for r in rows if r["best"] == "True"] == [best_id]
    table = open(os.path.join(project, "trials.md")).read()
    assert table.startswith("| trial | status | learning_rate") and "val_accuracy" in table
    assert table.count("| COMPLETED |") == 3 and f"best trial {best_id}:" in result.stdout

    # best.flags, as it is, trains the best trial's hyperparameters with apps.train.
    flagfile = os.path.join(project, "best.flags")
    flags = dict(
        line.split("=", 1) for line in open(flagfile).read().splitlines() if line.startswith("--") and "=" in line
    )
    best = after[best_id]["hyperparameters"]["values"]
    assert float(flags["--learning_rate"]) == best["learning_rate"] and float(flags["--power"]) == best["power"]
    assert flags["--lr_schedule"] == "poly" and flags["--epochs"] == "1" and flags["--micro_batch_size"] == "250"
    training = run_app("apps.train", f"--flagfile={flagfile}", "--max_updates=2", wait=False)
    # Meanwhile: resuming with another search space is refused, in one line.
    changed = run_app("apps.tune", *args, "--power_range=1,3")
    assert changed.returncode == 2
    assert changed.stderr.strip().splitlines()[-1].startswith("error: --project_name:")
    assert "--power_range: 1,2 there, 1,3 now" in changed.stderr
    out, err = training.communicate(timeout=300)
    assert training.returncode == 0, err[-3000:]
    summary = json.load(open(os.path.join(flags["--model_dir"], "summary.json")))
    assert summary["updates"] == 2 and summary["num_train"] == 5000
    for name in ("learning_rate", "momentum", "power", "weight_decay", "batch_size"):
        assert summary["flags"][name] == best[name], name
    assert summary["flags"]["optimizer"] == "sngm" and summary["flags"]["micro_batch_size"] == 250
