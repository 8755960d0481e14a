"""A table study's report: results.md in the paper's table layout (each row
at the rate its grid selected, then every run of the grids) and the learning
curves of the selected runs."""

from sngm_keras.studies.report import opening, percent
from sngm_keras.studies.tables import PAPER_TEST_ACCURACY, collect, swept_rows


def max_test_accuracy(summary):
    """The highest per-epoch test accuracy of a run, under its name in
    summary.json or, in runs before it had one, `best_test_accuracy`."""
    return summary.get("max_test_accuracy_over_epochs_not_for_selection", summary.get("best_test_accuracy"))


def _validation(summary):
    return percent(summary["validation_accuracy"]) if "validation_accuracy" in summary else "-"


def _method(config):
    """The table's method column: the optimizer and, for LARS, the variables it adapts."""
    if config.optimizer != "lars":
        return config.optimizer.upper()
    return "LARS (pytorch-lars: all variables)" if config.pytorch_lars else "LARS (biases, BN excluded)"


def _warmup(config):
    """The table's warm-up column ("-" where the optimizer has none)."""
    return "-" if config.optimizer != "lars" else ("Yes" if config.warmup_epochs else "No")


def _paper(study, run):
    accuracy = PAPER_TEST_ACCURACY[study].get((run.group, run.row))
    return "-" if accuracy is None else percent(accuracy)


def _table_row(entry, study):
    config, summary = entry["run"].config, entry["summary"]
    warmup, method = _warmup(config), _method(config)
    power = f"{config.power:g}" if config.lr_schedule == "poly" else f"step {','.join(map(str, config.decay_epochs))}"
    minutes = summary["wall_seconds"] / 60
    return (
        f"| {entry['run'].group} | {method} | {warmup} | {config.learning_rate:g} | {power} | "
        f"{config.batch_size} | {_validation(summary)} | {percent(summary['test_accuracy'])} | "
        f"{percent(max_test_accuracy(summary))} | "
        + (f"{_paper(study, entry['run'])} | " if study in PAPER_TEST_ACCURACY else "")
        + f"{summary['updates']} | {config.epochs} | {minutes:.1f} |"
    )


def _header(study):
    columns = [
        "model",
        "method",
        "warm-up",
        "initial learning rate",
        "power / schedule",
        "batch size",
        "validation accuracy",
        "test accuracy",
        "max test accuracy over epochs (not for selection)",
        *(["paper's test accuracy"] if study in PAPER_TEST_ACCURACY else []),
        "updates",
        "epochs",
        "wall minutes",
    ]
    return "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)


def results_markdown(study, runs, context, waiting=0):
    """The study's results.md; `waiting`: runs not in `runs` yet because
    they take the rate selected for a row whose grid has not finished."""
    best, every = collect(runs)
    lines = opening(study, context)
    wall = sum(e["summary"]["wall_seconds"] for e in every)
    waits = f" ({waiting} {'waits' if waiting == 1 else 'wait'} for a rate selected on another row)" if waiting else ""
    lines += [
        f"- runs finished: {len(every)} of {len(runs) + waiting}{waits}; their wall time: {wall / 3600:.2f} h",
        "",
    ]
    lines += [
        "Test accuracy is measured after the last epoch; the max over epochs is the highest of the per-epoch "
        "evaluations, picked on the test split, so it is no result (reported for reference, used to pick nothing).",
        "",
    ]
    grid = len(runs) > len({(r.group, r.row) for r in runs})
    if grid:
        by = "validation" if all("validation_accuracy" in e["summary"] for e in every) else "test"
        lines += [
            f"Each method at the initial learning rate of its grid that gave the highest final {by} accuracy"
            + (" (on training images held out of training):" if by == "validation" else ":"),
            "",
        ]
    if study in PAPER_TEST_ACCURACY:
        lines += [
            "The paper's test accuracy is its table's, after its full epoch budget (160 on CIFAR-10, 90 on "
            "ImageNet); its LARS rows ran the pytorch-lars code (every variable adapted).",
            "",
        ]
    header, row = _header(study), lambda e: _table_row(e, study)
    lines += [header] + [row(e) for e in best] + [""]
    unfinished = _unfinished_grids(runs, every)
    if unfinished:
        lines += ["Grids not finished (each rate above chosen among its finished runs only): " + unfinished, ""]
    on_edge = _on_edge(runs, best)
    if on_edge:
        lines += ["Chosen at an edge of the grid, so a rate beyond it might do better: " + on_edge, ""]
    if grid:
        lines += ["## Every run of the learning-rate grid", "", header] + [row(e) for e in every] + [""]
    return "\n".join(lines)


def _unfinished_grids(runs, every):
    """'resnet20 msgd_b4096 (1 of 3 rates), ...' for the rows with a run
    finished and one not yet (rows with none finished are not in the table)."""
    finished = {e["run"].run_id for e in every}
    counts = {}
    for run in runs:
        done, total = counts.get((run.group, run.row), (0, 0))
        counts[(run.group, run.row)] = (done + (run.run_id in finished), total + 1)
    return ", ".join(
        f"{group} {row} ({done} of {total} rates)" for (group, row), (done, total) in counts.items() if 0 < done < total
    )


def _on_edge(runs, best):
    """'resnet20 sngm_b4096 (0.8, the smallest of 0.8, 1.6, 3.2), ...' for
    the rows whose chosen rate is the smallest or largest their grid plans."""
    grids = {(row[0].group, row[0].row): sorted({r.config.learning_rate for r in row}) for row in swept_rows(runs)}
    found = []
    for entry in best:
        run = entry["run"]
        grid = grids.get((run.group, run.row))
        rate = run.config.learning_rate
        if grid and rate in (grid[0], grid[-1]):
            end = "smallest" if rate == grid[0] else "largest"
            found.append(f"{run.group} {run.row} ({rate:g}, the {end} of {', '.join(f'{r:g}' for r in grid)})")
    return ", ".join(found)


def _curve_label(config):
    """A legend label that tells a model's table rows apart: the method as
    the table names it (the pytorch-lars row runs at the rate selected for
    the default LARS row, so the optimizer, batch size and rate alone would
    not), shortened to fit a legend."""
    method = config.optimizer.upper()
    if config.optimizer == "lars" and config.pytorch_lars:
        method += " (pytorch-lars)"
    if _warmup(config) == "Yes":
        method += ", warm-up"
    return f"{method}, B={config.batch_size}, lr={config.learning_rate:g}"


def curve_groups(runs):
    """{panel title: {curve label: history rows}}, one curve per table row
    (the row's selected rate); a label two rows share is followed by the
    row's name (a scaled-down warm-up of 0 epochs leaves no other difference)."""
    best, _ = collect(runs)
    groups = {}
    for entry in best:
        run = entry["run"]
        curves = groups.setdefault(f"{run.config.model} on {run.config.dataset}", {})
        label = _curve_label(run.config)
        if label in curves:
            label = f"{label} [{run.row}]"
        curves[label] = entry["history"]
    return groups
