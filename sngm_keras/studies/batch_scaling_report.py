"""The batch-scaling study's table (markdown) and figure: (a) test accuracy
against B, (b) steps-to-target against B with the perfect-scaling line."""

import statistics

from sngm_keras.studies.batch_scaling import (
    RULES,
    end_noise_scales,
    rate_exponent,
    scaling_efficiency,
    scaling_summary,
)
from sngm_keras.studies.lr_grid import learned
from sngm_keras.studies.report import opening, percent


def _steps(x):
    return "not reached" if x is None else str(x)


def _noise(scale):
    return "-" if scale is None else f"{scale:.0f}"


def _run_row(run, marks=""):
    config, summary = run["config"], run["summary"]
    return (
        f"| {config.optimizer.upper()} | {config.batch_size} | {config.learning_rate:g}{marks} | "
        f"{percent(summary['validation_accuracy'])} | {percent(summary['best_validation_accuracy'])} | "
        f"{percent(summary['test_accuracy'])} | {_steps(run['steps_to_target'])} | {summary['updates']} | "
        f"{summary['wall_seconds'] / 60:.1f} |"
    )


def _fastest(entry):
    """The steps-to-target cell: the fewest updates over the grid and the
    rate that took them, marked where that rate is the grid's smallest or
    largest (the grid is extended for accuracy, not for speed)."""
    fastest = entry.get("fastest")
    if fastest is None:
        return "not reached"
    rate = fastest["config"].learning_rate
    edge = ", edge of grid" if _on_edge(entry) else ""
    return f"{fastest['steps_to_target']} ({rate:g}{edge})"


def _on_edge(entry):
    if not entry.get("fastest"):
        return False
    rate = entry["fastest"]["config"].learning_rate
    return rate in (min(entry["rates"]), max(entry["rates"]))


def markdown(study, table, context):
    target = study.target
    lines = opening("batch_scaling", context)
    total = sum(len(e["runs"]) for e in table)
    wall = sum(r["summary"]["wall_seconds"] for e in table for r in e["runs"])
    lines += [f"- runs finished: {total}; their wall time: {wall / 3600:.2f} h", ""]
    lines += [
        "Learning-rate grids are centred on a scaling rule: "
        + "; ".join(
            f"{m.upper()} {rule} in B from {r0:g} at B = {b0}"
            for m, (r0, b0, _, rule) in RULES.items()
            if m in study.methods
        )
        + f". Grid factors: {', '.join(f'{f:.3g}' for f in study.lr_factors)}; a grid whose best rate lies on "
        f"its edge is extended by a factor {study.spacing:g} beyond it, up to {study.max_extensions} times.",
        "",
        f"Selected: the rate with the highest final validation accuracy (held-out training images), runs that "
        "learned nothing (final training loss not finite or not below 99% of ln K, K classes: diverged, or "
        "predicting one class) ranked last; a grid where no rate learned is extended below its smallest rate. "
        f"The test accuracy is that run's. Steps to {percent(target)}: the fewest updates, over the grid, after which "
        "the validation accuracy first reached the target (it is evaluated several times per epoch); "
        '"edge of grid" there marks a rate that is the smallest or largest of its grid, which is extended for '
        "accuracy, not for speed: a rate beyond it may reach the target sooner, so that count may be an "
        "overestimate. "
        "Noise scale: the gradient noise scale B_simple at the end of the selected run, measured from its "
        "micro-batches (none where B is one micro-batch). Its moving averages weigh about the last 100 "
        "updates, so the figure describes late training where a run makes many updates and nearly the whole "
        "run where it makes few.",
        "",
        "| method | B | updates | selected rate | validation accuracy | test accuracy | steps to target "
        "(rate) | rates run | noise scale |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    scales = {(m, b): scale for m, b, scale in end_noise_scales(table)}
    for entry in table:
        cell, selected = entry["cell"], entry["selected"]
        if selected is None:
            lines.append(f"| {cell.method.upper()} | {cell.batch_size} | - | not run yet | | | | | |")
            continue
        steps = _fastest(entry)
        edge = " (edge of grid)" if entry["on_edge"] else ""
        edge += "" if entry["learned"] else " (no rate learned)"
        pending = "" if entry["complete"] else " (grid unfinished)"
        lines.append(
            f"| {cell.method.upper()} | {cell.batch_size} | {selected['summary']['updates']} | "
            f"{selected['config'].learning_rate:g}{edge}{pending} | "
            f"{percent(selected['summary']['validation_accuracy'])} | "
            f"{percent(selected['summary']['test_accuracy'])} | {steps} | {len(entry['runs'])} | "
            f"{_noise(scales.get((cell.method, cell.batch_size)))} |"
        )
    lines += ["", "Largest B within 1 point of the smallest B's test accuracy:", ""]
    for method, held in scaling_summary(table, study.methods, study.batch_sizes).items():
        lines.append(
            f"- {method.upper()}: B = {held['largest_batch_within']} (smallest B: {percent(held['base_accuracy'])})"
        )
    lines += _rules_followed(study, table) + _efficiencies(study, table)
    lines += [
        "",
        "## Every run",
        "",
        "| method | B | rate | final validation accuracy | best validation accuracy | test accuracy | "
        f"steps to {percent(target)} | updates | wall minutes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in table:
        for run in entry["runs"]:
            marks = " (selected)" if run is entry["selected"] else ""
            marks += "" if learned(run["config"], run["summary"]) else " (learned nothing)"
            lines.append(_run_row(run, marks))
    return "\n".join(lines) + "\n"


def _rules_followed(study, table):
    lines = ["", "Selected rates against B (least-squares fit of rate = a * B^k, log-log):", ""]
    for method in study.methods:
        k = rate_exponent(table, method)
        if k is None:
            continue
        entries = [e for e in table if e["cell"].method == method and e["selected"] is not None]
        edges = [str(e["cell"].batch_size) for e in entries if e["on_edge"] and e["learned"]]
        unfinished = [str(e["cell"].batch_size) for e in entries if not e["complete"]]
        unlearned = [str(e["cell"].batch_size) for e in entries if not e["learned"]]
        notes = "".join(
            [
                f"; still on its grid's edge at B = {', '.join(edges)}, so k is a bound" if edges else "",
                f"; grids unfinished at B = {', '.join(unfinished)}" if unfinished else "",
                f"; no rate learned at B = {', '.join(unlearned)}, left out" if unlearned else "",
            ]
        )
        _, _, assumed, rule = RULES[method]
        lines.append(f"- {method.upper()}: k = {k:.2f} (grid centred on the {rule} rule, k = {assumed:g}){notes}")
    return lines


def _efficiency(efficiency, batch_size):
    if batch_size not in efficiency:
        return "-"  # not run yet
    value = efficiency[batch_size]
    return "not reached" if value is None else f"{value:.2f}"


def _efficiencies(study, table):
    """Steps-to-target against the perfect-scaling line, per method and B."""
    batch_sizes = sorted(study.batch_sizes)
    lines = [
        "",
        "Scaling efficiency, steps(B0) * B0 / (steps(B) * B) with steps the steps to target and B0 the smallest "
        "B that reached it: 1 on the perfect-scaling line, 0.5 where B needs twice B0's examples.",
        "",
        "| method | " + " | ".join(f"B = {b}" for b in batch_sizes) + " |",
        "|---|" + "---|" * len(batch_sizes),
    ]
    for method in study.methods:
        efficiency = scaling_efficiency(table, method)
        cells = [_efficiency(efficiency, b) for b in batch_sizes]
        lines.append(f"| {method.upper()} | " + " | ".join(cells) + " |")
    return lines


def plot(study, table, path):
    """Panel (a): selected test accuracy against B; (b): steps-to-target
    against B (log-log) with each method's perfect-scaling line from its
    smallest B that reached the target, and, where the selected runs
    measured it, the median of their end-of-training noise scales (dashed)
    over the range of them (shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, steps_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for method in study.methods:
        entries = [e for e in table if e["cell"].method == method and e["selected"] is not None]
        sizes = [e["cell"].batch_size for e in entries]
        (line,) = acc_ax.plot(
            sizes, [100 * e["selected"]["summary"]["test_accuracy"] for e in entries], "o-", label=method.upper()
        )
        unlearned = [
            (e["cell"].batch_size, 100 * e["selected"]["summary"]["test_accuracy"]) for e in entries if not e["learned"]
        ]
        if unlearned:
            acc_ax.plot(*zip(*unlearned), "o", mfc="white", color=line.get_color())
        reached = [(e["cell"].batch_size, e["fastest"]["steps_to_target"]) for e in entries if e.get("fastest")]
        if reached:
            steps_ax.plot(*zip(*reached), "o-", color=line.get_color(), label=method.upper())
            edges = [(e["cell"].batch_size, e["fastest"]["steps_to_target"]) for e in entries if _on_edge(e)]
            if edges:  # reached at the grid's smallest or largest rate: perhaps fewer with a wider grid
                steps_ax.plot(*zip(*edges), "o", mfc="white", color=line.get_color())
            b0, s0 = reached[0]
            ideal = [b for b in study.batch_sizes if b >= b0]
            steps_ax.plot(ideal, [s0 * b0 / b for b in ideal], ":", color=line.get_color(), alpha=0.6)
    acc_ax.set(
        xscale="log",
        xlabel="batch size B",
        ylabel="test accuracy (%)",
        title="(a) test accuracy at an equal epoch budget",
    )
    steps_ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch size B",
        ylabel="updates",
        title=f"(b) updates to {100 * study.target:g}% validation accuracy",
    )
    scales = [scale for _, _, scale in end_noise_scales(table)]
    if scales:
        low, middle, high = min(scales), statistics.median(scales), max(scales)
        steps_ax.axvspan(low, high, color="grey", alpha=0.15, lw=0)
        steps_ax.axvline(middle, color="grey", linestyle="--", label=f"noise scale {middle:.0f} ({low:.0f}-{high:.0f})")
    if not all(e["learned"] for e in table if e["selected"] is not None):
        acc_ax.plot([], [], "ko", mfc="white", label="no rate learned")
    steps_ax.plot([], [], "k:", alpha=0.6, label="perfect scaling")
    steps_ax.plot([], [], "ko", mfc="white", label="at the grid's edge")
    for ax in (acc_ax, steps_ax):
        ax.set_xticks(study.batch_sizes, [str(b) for b in study.batch_sizes])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
