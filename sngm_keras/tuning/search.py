"""Keras Tuner's tuners on a search folder that resumes where a stopped search left off.

`make_tuner` builds a Keras Tuner `RandomSearch`, `BayesianOptimization` or
`Hyperband` on `<directory>/<project_name>/`, which resumes where a stopped
search left off (Keras Tuner's oracle state: finished trials are kept, the
trial that was running is run again; `recover_interrupted` repairs the state
a kill between two of Keras Tuner's writes leaves). It records the search's
settings in search.json there and refuses to resume a search made with other
settings (`ConfigError` on "project_name"), and it never lets Keras Tuner's
`overwrite` discard a search unless asked to. Keras Tuner's own JSON files
are written atomically here, so a kill never leaves one half-written. Each trial's wall time is kept
in its trial.json as the metric "wall_seconds", and the reports are
rewritten after each trial.
"""

import contextlib
import glob
import json
import os
import shutil
import time

import keras_tuner
from keras_tuner.src import utils as keras_tuner_utils

from sngm_keras import checks
from sngm_keras.training.errors import ConfigError, as_config_errors
from sngm_keras.training.rundir import describe_differences, differences, read_json, write_atomic
from sngm_keras.tuning.reports import WALL_SECONDS, write_reports
from sngm_keras.tuning.space import OBJECTIVES, check_search_options

SETTINGS_FILE = "search.json"


class _SearchTuner:
    """Times each trial into its metrics and rewrites the reports after each trial."""

    final_epochs = None
    write_reports_after_trials = True
    _trial_started = None  # (trial id, time.perf_counter()) of the trial begun last

    def search(self, *args, **kwargs):
        with atomic_json_writes():
            return super().search(*args, **kwargs)

    def on_trial_begin(self, trial):
        self._trial_started = (trial.trial_id, time.perf_counter())
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        if self._trial_started is None or self._trial_started[0] != trial.trial_id:
            raise RuntimeError(
                f"keras_tuner {keras_tuner.__version__} ended trial {trial.trial_id} without beginning it "
                "(on_trial_begin), so its wall_seconds cannot be measured"
            )
        seconds = time.perf_counter() - self._trial_started[1]
        metrics = self.oracle.trials[trial.trial_id].metrics
        metrics.metrics.pop(WALL_SECONDS, None)  # a retried trial: its last run
        metrics.register(WALL_SECONDS, direction="min")
        metrics.update(WALL_SECONDS, seconds)
        try:
            super().on_trial_end(trial)  # raises RuntimeError after too many failed trials in a row
        finally:
            if self.write_reports_after_trials:
                write_reports(self, final_epochs=self.final_epochs)


class RandomSearchTuner(_SearchTuner, keras_tuner.RandomSearch):
    pass


class BayesianTuner(_SearchTuner, keras_tuner.BayesianOptimization):
    pass


class HyperbandTuner(_SearchTuner, keras_tuner.Hyperband):
    pass


@contextlib.contextmanager
def atomic_json_writes():
    """Keras Tuner's oracle.json, tuner0.json and trial.json written whole or not at all.

    Keras Tuner truncates a file and then writes it: killed in between, it
    leaves an empty oracle.json that no resume can read. Every state file
    goes through `keras_tuner.src.utils.save_json` (`Stateful.save`), a
    private function, replaced here while a search runs.
    """
    original = keras_tuner_utils.save_json

    def save_json(path, obj):
        text = json.dumps(obj)
        write_atomic(path, text)
        return text

    keras_tuner_utils.save_json = save_json
    try:
        yield
    finally:
        keras_tuner_utils.save_json = original


def check_state_files(project_dir):
    """ConfigError naming the first of Keras Tuner's state files that cannot be read."""
    names = ["oracle.json", "tuner0.json"] + sorted(glob.glob("trial_*/trial.json", root_dir=project_dir))
    for name in names:
        path = os.path.join(project_dir, name)
        if not os.path.exists(path):
            continue
        try:
            read_json(path)
        except (OSError, ValueError):
            raise ConfigError(
                "project_name",
                f"{path} is empty or damaged (the search was stopped while writing it); "
                "use another --project_name, or --overwrite to discard this search",
            ) from None


def claim_search(project_dir, settings):
    """Records `settings` in project_dir/search.json, or checks they match those there."""
    path = os.path.join(project_dir, SETTINGS_FILE)
    wanted = json.loads(json.dumps(settings))
    if os.path.exists(path):
        recorded = read_json(path)
        keys = differences(recorded, wanted)
        if keys:
            raise ConfigError(
                "project_name",
                f"{project_dir} holds a search with other settings "
                f"({describe_differences(recorded, wanted, keys, _show)}); "
                "use another --project_name, or --overwrite to discard it",
            )
        return False
    if os.path.isdir(project_dir) and os.listdir(project_dir):
        raise ConfigError(
            "project_name",
            f"{project_dir} holds files of an unknown search ({sorted(os.listdir(project_dir))[0]}); "
            "use another --project_name, or --overwrite to discard it",
        )
    try:
        os.makedirs(project_dir, exist_ok=True)
        write_atomic(path, json.dumps(wanted, indent=2, sort_keys=True))
    except OSError as error:
        raise ConfigError("directory", f"cannot write {project_dir} ({error.strerror or error})") from None
    return True


def _show(value):
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return repr(value)


def make_tuner(
    hypermodel,
    tuner="random",
    *,
    max_trials,
    directory,
    project_name,
    objective="val_accuracy",
    overwrite=False,
    final_epochs=None,
):
    """A Keras Tuner on <directory>/<project_name>/ that resumes the search there.

    `overwrite=True` deletes that folder first (a new search); otherwise an
    existing search resumes, if its settings are those of `hypermodel`,
    `tuner` and `objective` (`max_trials` may grow). The oracle is seeded
    with `hypermodel.config.seed + 1` (Keras Tuner takes 0 for "random").
    `final_epochs` is the --epochs of the best.flags the reports write
    (default: the trials' epochs).
    """
    check_search_options(tuner, max_trials, objective)
    if final_epochs is not None:
        with as_config_errors():
            checks.check_positive_int("final_epochs", final_epochs)
    if not project_name or os.sep in project_name or project_name in (".", ".."):
        raise ConfigError("project_name", f"must be a plain folder name, got {project_name!r}")
    project_dir = os.path.join(directory, project_name)
    if os.path.exists(project_dir) and not os.path.isdir(project_dir):
        raise ConfigError("project_name", f"{project_dir} exists and is not a folder")
    if overwrite and os.path.isdir(project_dir):
        shutil.rmtree(project_dir)
    claim_search(project_dir, dict(hypermodel.settings(), tuner=tuner, objective=objective))
    check_state_files(project_dir)

    common = dict(
        hypermodel=hypermodel,
        objective=keras_tuner.Objective(objective, OBJECTIVES[objective]),
        directory=directory,
        project_name=project_name,
        overwrite=False,
        seed=hypermodel.config.seed + 1,
    )
    with atomic_json_writes():
        if tuner == "random":
            result = RandomSearchTuner(max_trials=max_trials, **common)
        elif tuner == "bayesian":
            result = BayesianTuner(max_trials=max_trials, **common)
        else:
            # Successive halving up to epochs_per_trial; brackets repeat until max_trials.
            result = HyperbandTuner(max_epochs=hypermodel.config.epochs, hyperband_iterations=None, **common)
        result.oracle.max_trials = max_trials  # not part of the oracle's saved state: a resume may raise it
        result.final_epochs = final_epochs
        recover_interrupted(result.oracle)
        # Keras Tuner reloads a search only once tuner0.json exists, which it
        # first writes after a trial ended: a kill just before that would start
        # the search afresh.
        result.save()
    return result


def recover_interrupted(oracle):
    """Makes the trial files the truth after a kill.

    Keras Tuner writes a trial's trial.json and then oracle.json. Killed in
    between, a finished trial is still listed as running in oracle.json (and
    the reload would run it again), or a trial just started is missing from
    oracle.json (and would never run, yet count toward max_trials). Finished
    trials leave the retry queue; started, unfinished ones join it.
    """
    # Private Keras Tuner API: Oracle._retry_queue, the list of trial ids that
    # create_trial runs before drawing new values and that oracle.json saves
    # as "retry_queue". No public API serves: Keras Tuner queues a trial only
    # itself (from Oracle.reload, for the trials oracle.json lists as running,
    # and for a failed trial with retries left), and has no way to queue a
    # trial oracle.json does not list or to drop a finished one.
    # tests/test_tune_keras_tuner.py fails when Keras Tuner stops honouring it.
    if not isinstance(getattr(oracle, "_retry_queue", None), list):
        raise RuntimeError(
            f"keras_tuner {keras_tuner.__version__}: the oracle has no list _retry_queue, which resuming an "
            "interrupted search relies on"
        )
    queue = [i for i in oracle._retry_queue if oracle.trials[i].status not in ("COMPLETED", "FAILED")]
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        if trial_id not in oracle.start_order:
            oracle.start_order.append(trial_id)
        if trial.status in ("COMPLETED", "FAILED") and trial_id not in oracle.end_order:
            oracle.end_order.append(trial_id)
        running = trial.status == "RUNNING" and trial not in oracle.ongoing_trials.values()
        if running and trial_id not in queue:
            queue.append(trial_id)
    oracle._retry_queue = queue
