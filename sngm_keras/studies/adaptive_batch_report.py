"""The adaptive-batch study's table (markdown) and figure: each cell's run
chosen on validation, the grown batch against the fixed ones, and the goal:
within 1 point of the smallest fixed B's test accuracy with at most a third
of its updates."""

import math
import os

from sngm_keras.studies.lr_grid import learned
from sngm_keras.studies.report import opening, percent

GOAL_POINTS, GOAL_UPDATES = 1.0, 1 / 3


def _steps(entry):
    fastest = entry.get("fastest")
    if fastest is None:
        return "not reached"
    return f"{fastest['steps_to_target']} ({fastest['config'].learning_rate:g})"


def _batches(summary):
    return summary.get("batch_sizes_used") or "fixed"


def _label(cell):
    """'512', or '128 grown to <= 8192'."""
    return getattr(cell, "label", str(cell.batch_size))


def _row(entry):
    cell, chosen = entry["cell"], entry["selected"]
    if chosen is None:
        return f"| {cell.method.upper()} | {_label(cell)} | not run yet | | | | | | |"
    summary, config = chosen["summary"], chosen["config"]
    marks = " (edge of grid)" if entry["on_edge"] else ""
    marks += "" if entry["learned"] else " (no rate learned)"
    marks += "" if entry["complete"] else " (grid unfinished)"
    return (
        f"| {cell.method.upper()} | {_label(cell)} | {summary['updates']} | {config.learning_rate:g}{marks} | "
        f"{percent(summary['validation_accuracy'])} | {percent(summary['test_accuracy'])} | {_steps(entry)} | "
        f"{summary['wall_seconds'] / 60:.1f} | {_batches(summary)} |"
    )


def goal_lines(study, table):
    """Per method: the grown cell against the smallest fixed B (the goal)
    and against the fixed B whose update count is nearest its own."""
    lines = []
    for grown in study.grown_entries(table):
        method = grown["cell"].method
        fixed = {
            e["cell"].batch_size: e["selected"]
            for e in table
            if e["cell"].method == method and e not in study.grown_entries(table) and e["selected"]
        }
        if grown["selected"] is None or study.start not in fixed:
            continue
        g, base = grown["selected"]["summary"], fixed[study.start]["summary"]
        points = 100 * (g["test_accuracy"] - base["test_accuracy"])
        share = g["updates"] / base["updates"]
        met = points >= -GOAL_POINTS and share <= GOAL_UPDATES
        nearest = min(fixed, key=lambda b: abs(math.log(fixed[b]["summary"]["updates"] / g["updates"])))
        near = fixed[nearest]["summary"]
        lines.append(
            f"- {method.upper()}: grown {percent(g['test_accuracy'])} in {g['updates']} updates against fixed "
            f"B = {study.start}'s {percent(base['test_accuracy'])} in {base['updates']}: {points:+.2f} points with "
            f"{share:.2f} of its updates -- the goal (within {GOAL_POINTS:g} point with at most a third of the "
            f"updates) {'met' if met else 'not met'}. The fixed B nearest in updates, B = {nearest} "
            f"({near['updates']} updates): {percent(near['test_accuracy'])}, "
            f"{100 * (g['test_accuracy'] - near['test_accuracy']):+.2f} points for the grown batch."
        )
    return lines


def markdown(study, table, context):
    lines = opening("adaptive_batch", context)
    total = sum(len(e["runs"]) for e in table)
    lines += [
        f"- runs finished: {total}; fixed cells' runs read from: {study.fixed_runs_dir}",
        "",
        f"Fixed cells: the batch-scaling study's (micro-batches of {study.micro_batch_size}). Grown cells: from "
        f"B = {study.start} to at most {study.maximum} in micro-batches of 64, the batch set at each epoch's end "
        "to the measured noise scale B_simple, rounded down to a power-of-two multiple of the micro-batch and "
        "never shrinking; the rate kept. Chosen: the rate with the highest final validation accuracy (runs that "
        "learned nothing last). Updates to target: the fewest over the grid to "
        f"{percent(study.target)} validation accuracy (the rate in brackets). Wall minutes: the chosen run's.",
        "",
        "| method | B | updates | chosen rate | validation accuracy | test accuracy | updates to target (rate) "
        "| wall minutes | batches |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(e) for e in table]
    lines += ["", *goal_lines(study, table)]
    lines += [
        "",
        "## Every run",
        "",
        "| run | learned | validation accuracy | test accuracy | updates | batches |",
        "|---|---|---|---|---|---|",
    ]
    for entry in table:
        for run in entry["runs"]:
            config, summary = run["config"], run["summary"]
            lines.append(
                f"| {os.path.basename(config.model_dir)} | {'yes' if learned(config, summary) else 'no'} | "
                f"{percent(summary['validation_accuracy'])} | {percent(summary['test_accuracy'])} | "
                f"{summary['updates']} | {_batches(summary)} |"
            )
    return "\n".join(lines) + "\n"


def plot(study, table, path):
    """(a) the batch of each grown cell's chosen run against epochs; (b) the
    validation accuracy of every cell's chosen run against epochs; (c) the
    same against updates (log: the grown batch's saving is a factor)."""
    from sngm_keras.training.curves import plt, save_figure
    from sngm_keras.training.rundir import RunDir

    fig, (batch_ax, epoch_ax, update_ax) = plt.subplots(1, 3, figsize=(14, 4.2))
    for entry in table:
        if entry["selected"] is None:
            continue
        cell, summary = entry["cell"], entry["selected"]["summary"]
        grown = bool(getattr(cell, "grown_to", None))
        rows = RunDir(entry["selected"]["config"].model_dir).read_validation()
        label = f"{cell.method.upper()}, B = {_label(cell)}"
        style = dict(linewidth=2.2 if grown else 1.0, linestyle="-" if grown else "--")
        epochs = [float(r["epoch"]) for r in rows]
        accuracy = [100 * float(r["validation_accuracy"]) for r in rows]
        (line,) = epoch_ax.plot(epochs, accuracy, label=label, **style)
        update_ax.plot([int(r["updates"]) for r in rows], accuracy, color=line.get_color(), label=label, **style)
        if grown and summary.get("epoch_batch_sizes"):
            sizes = summary["epoch_batch_sizes"]
            batch_ax.step(range(1, len(sizes) + 1), sizes, where="post", color=line.get_color(), label=label)
    for ax in (epoch_ax, update_ax):
        ax.axhline(100 * study.target, color="gray", linestyle=":", label="target")
        ax.set(ylabel="validation accuracy (%)")
        ax.grid(alpha=0.3)
    batch_ax.set(yscale="log", xlabel="epoch", ylabel="batch size B", title="(a) the grown batch")
    epoch_ax.set(xlabel="epoch", title="(b) accuracy against epochs")
    update_ax.set(xscale="log", xlabel="updates", title="(c) accuracy against updates")
    batch_ax.grid(alpha=0.3)
    batch_ax.legend(fontsize=7)
    update_ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)
