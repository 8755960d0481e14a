"""The search's reports: trials.csv, trials.md and best.flags in its folder.

One row per trial (its hyperparameters, score, wall time, error), the
Markdown table apps.tune prints, and best.flags, a flagfile that trains the
best completed trial's hyperparameters with apps.train.
"""

import csv
import dataclasses
import io
import math
import os

from sngm_keras.training.flagfile import flagfile_text
from sngm_keras.training.rundir import write_atomic
from sngm_keras.tuning.space import HYPERPARAMETERS

# The metric the tuners record each trial's wall time under (see search.py).
WALL_SECONDS = "wall_seconds"
FLAGFILE = "best.flags"
TRIALS_CSV = "trials.csv"
TRIALS_MD = "trials.md"


def best_trial(tuner):
    """The completed trial with the best score, or None (Keras Tuner's
    get_best_trials falls back to unfinished ones)."""
    oracle = tuner.oracle
    scored = [
        t for t in oracle.trials.values() if t.status == "COMPLETED" and t.score is not None and not math.isnan(t.score)
    ]
    if not scored:
        return None
    pick = max if oracle.objective.direction == "max" else min
    return pick(scored, key=lambda t: t.score)


def trial_rows(tuner):
    """One dict per trial, in the order they started: trial, status, the
    hyperparameters, epochs, score (the objective), wall_seconds, best, and
    error (the last line of a failed trial's error, else None)."""
    oracle = tuner.oracle
    best = best_trial(tuner)
    best_id = best.trial_id if best else None
    rows = []
    for trial_id in oracle.start_order:
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        row = {"trial": trial_id, "status": trial.status}
        row.update({name: values.get(name) for name in HYPERPARAMETERS})
        row["epochs"] = values.get("tuner/epochs", tuner.hypermodel.config.epochs)
        row["score"] = trial.score
        wall = trial.metrics.get_best_value(WALL_SECONDS) if trial.metrics.exists(WALL_SECONDS) else None
        row[WALL_SECONDS] = None if wall is None else float(wall)
        row["best"] = trial_id == best_id
        lines = [line for line in (trial.message or "").splitlines() if line.strip()]
        row["error"] = lines[-1].strip() if lines and trial.status != "COMPLETED" else None
        rows.append(row)
    return rows


def _cell(value, key=None):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "*" if value else ""
    if key == WALL_SECONDS:
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows, objective):
    columns = ["trial", "status", *HYPERPARAMETERS, "epochs", "score", WALL_SECONDS, "best"]
    header = [objective if c == "score" else c for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c], c) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def best_config(tuner, final_epochs=None):
    """The `TrainConfig` to train the best trial's hyperparameters with apps.train, or None.

    Its model_dir is best_trial_<id>/ in the search's folder, its epochs
    `final_epochs` (default: the trials' epochs).
    """
    trial = best_trial(tuner)
    if trial is None:
        return None
    hypermodel = tuner.hypermodel
    config = hypermodel.trial_config(trial.hyperparameters.copy())
    return dataclasses.replace(
        config,
        epochs=final_epochs or hypermodel.config.epochs,
        micro_batch_size=config.micro_batch_size or config.batch_size,
        model_dir=os.path.abspath(os.path.join(tuner.project_dir, f"best_trial_{trial.trial_id}")),
    )


def write_reports(tuner, final_epochs=None):
    """Writes trials.csv, trials.md and (once a trial completed) best.flags into
    the search's folder; returns {"csv", "md", "flags"} paths (flags None
    when no trial completed)."""
    project_dir = tuner.project_dir
    objective = tuner.oracle.objective.name
    rows = trial_rows(tuner)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["trial"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    paths = {"csv": os.path.join(project_dir, TRIALS_CSV), "md": os.path.join(project_dir, TRIALS_MD), "flags": None}
    write_atomic(paths["csv"], out.getvalue())
    write_atomic(paths["md"], markdown_table(rows, objective))
    config = best_config(tuner, final_epochs)
    if config is not None:
        best = next(r for r in rows if r["best"])
        header = [
            f"Best trial {best['trial']} of the search in {os.path.abspath(project_dir)}:",
            f"{objective} {best['score']:.4f} on the {tuner.hypermodel.num_validation} held-out training images,"
            f" {best['epochs']} epoch(s) on {tuner.hypermodel.num_train} images.",
            f"Train it: python -m apps.train --flagfile={os.path.abspath(os.path.join(project_dir, FLAGFILE))}",
        ]
        paths["flags"] = os.path.join(project_dir, FLAGFILE)
        write_atomic(paths["flags"], flagfile_text(config, header))
    return paths
