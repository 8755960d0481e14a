"""Studies: the sets of training runs that reproduce the paper's tables and
figures, planned as `TrainConfig`s and summarized as a table and curves.

A study's output folder holds `study.json` (which study, with which scale
and grid), one `runs/<run id>/` model_dir per run, `results.md` and
`curves.png`.
"""

import dataclasses
import json
import math
import os

from sngm_keras import checks
from sngm_keras.training.config import ConfigError, TrainConfig
from sngm_keras.training.errors import as_config_errors
from sngm_keras.training.rundir import RunDir, describe_differences, differences, read_json, write_atomic


def _presets(prefix, groups, names):
    return [f"{prefix}_{group}_{name}" for group in groups for name in names]


# Each study is a list of presets named <table>_<group>_<row>.
STUDIES = {
    "table2": _presets(
        "table2",
        ("resnet20", "resnet56"),
        ("msgd_b128", "msgd_b4096", "lars_b4096", "lars_warmup_b4096", "lars_pytorch_b4096", "sngm_b4096"),
    ),
    "table3": _presets("table3", ("resnet18", "resnet50"), ("msgd_b256", "sngm_b8192")),
    "figure1_cpu": _presets("figure1", ("cpu",), ("msgd_b128", "msgd_b4096", "lars_b4096", "sngm_b4096")),
}


# The paper's test accuracy for each row of its Tables 2 and 3, at their full
# budgets (160 epochs on CIFAR-10, 90 on ImageNet). Its LARS rows ran the
# pytorch-lars code, so both of our LARS rows without warm-up sit beside its one.
_PAPER_TABLE2 = {
    # model: (MSGD B=128, MSGD B=4096, LARS, LARS+warm-up, SNGM), as _TABLE2_ROWS in presets
    "resnet20": (0.9163, 0.8925, 0.9066, 0.9080, 0.9142),
    "resnet56": (0.9311, 0.8855, 0.9246, 0.9298, 0.9312),
}
PAPER_TEST_ACCURACY = {
    "table2": {
        (model, row): accuracy
        for model, values in _PAPER_TABLE2.items()
        for row, accuracy in zip(
            ("msgd_b128", "msgd_b4096", "lars_b4096", "lars_warmup_b4096", "sngm_b4096"), values, strict=True
        )
    }
    | {(model, "lars_pytorch_b4096"): values[2] for model, values in _PAPER_TABLE2.items()},
    "table3": {
        ("resnet18", "msgd_b256"): 0.6971,
        ("resnet18", "sngm_b8192"): 0.6965,
        ("resnet50", "msgd_b256"): 0.7570,
        ("resnet50", "sngm_b8192"): 0.7542,
    },
}


# Rows trained at the rate the study selected for another row of the same
# model, once that row's runs have finished (not swept themselves).
RATE_FROM = {"lars_pytorch_b4096": "lars_b4096"}


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    run_id: str
    group: str  # the model: rows of the table, a panel of the figure
    row: str  # one method and batch size
    config: TrainConfig
    rate_from: str | None = None  # see RATE_FROM; config holds the preset's rate until resolved
    lr_factor: float | None = None  # the --lr_grid factor of the preset's rate; None where not swept
    extends_grid: bool = False  # a rate beyond the grid's edge (`extend_grids`)
    preset_rate: float | None = None  # the rate lr_factor multiplies


def scaled(config, epochs_scale):
    """`config` with its epochs, decay epochs and warm-up scaled."""
    if epochs_scale == 1:
        return config
    epochs = max(1, round(config.epochs * epochs_scale))
    decay = config.decay_epochs
    if config.lr_schedule == "step":  # other schedules ignore them
        decay = tuple(sorted({min(epochs - 1, max(1, round(e * epochs_scale))) for e in decay}))
    if config.lr_schedule == "step" and epochs < 2:
        raise ConfigError("epochs_scale", f"{epochs_scale} leaves {epochs} epoch, too few for the step schedule")
    warmup = min(round(config.warmup_epochs * epochs_scale), epochs - 1)
    return dataclasses.replace(config, epochs=epochs, decay_epochs=decay, warmup_epochs=warmup)


@as_config_errors()
def check_study_args(study, epochs_scale, lr_grid):
    checks.check_choice("study", study, tuple(STUDIES))
    checks.check_positive("epochs_scale", epochs_scale)
    if lr_grid is not None:
        checks.check_values("lr_grid", lr_grid, checks.check_positive, unique=False)


def plan(study, output_dir, epochs_scale=1.0, lr_grid=None, overrides=None, models=None, grid_rows=None, rows=None):
    """The runs of `study`, each a validated TrainConfig under output_dir/runs.

    `lr_grid`: factors applied to each row's initial learning rate; each
    method is then reported at its best factor (by validation accuracy when
    the runs hold a validation split out, `validation_size`), as the paper
    reports each method at its tuned learning rate; `grid_rows`: the rows
    swept (default all), the others run at their preset's rate. `models`
    and `rows` (e.g. `msgd_b4096`): keep only the rows of these models, and
    only these rows of each. Rows of `RATE_FROM` run once, at the rate
    selected for their source row (`resolve_rates`)."""
    check_study_args(study, epochs_scale, lr_grid)
    groups = {preset.split("_", 2)[1] for preset in STUDIES[study]}
    names = {preset.split("_", 2)[2] for preset in STUDIES[study]}
    for name, values in (("models", models), ("rows", rows)):
        if values is not None and not values:
            raise ConfigError(name, "name at least one, or leave the flag out for all")
    for model in models or ():
        if model not in groups:
            raise ConfigError(
                "models", f"study {study} has no rows for {model!r}; choose from {', '.join(sorted(groups))}"
            )
    _check_rows(study, names, rows, grid_rows)
    runs = []
    for preset in STUDIES[study]:
        row = preset.split("_", 2)[2]
        if (models and preset.split("_", 2)[1] not in models) or (rows and row not in rows):
            continue
        base = scaled(TrainConfig.from_preset(preset, **(overrides or {})), epochs_scale)
        group = base.model
        if row in RATE_FROM:
            config = dataclasses.replace(base, model_dir=os.path.join(output_dir, "runs", f"{group}_{row}"))
            runs.append(PlannedRun(f"{group}_{row}", group, row, config, rate_from=RATE_FROM[row]))
            continue
        swept = lr_grid if grid_rows is None or row in grid_rows else None
        for factor in swept or [None]:
            config = base
            run_id = f"{group}_{row}"
            if factor is not None:
                config = dataclasses.replace(config, learning_rate=base.learning_rate * factor)
                run_id = f"{run_id}_lr{config.learning_rate:g}"
            config = dataclasses.replace(config, model_dir=os.path.join(output_dir, "runs", run_id))
            runs.append(PlannedRun(run_id, group, row, config, lr_factor=factor, preset_rate=base.learning_rate))
    return runs


def _check_rows(study, names, rows, grid_rows):
    for row in rows or ():
        if row not in names:
            raise ConfigError("rows", f"study {study} has no row {row!r}; choose from {', '.join(sorted(names))}")
        if row in RATE_FROM and RATE_FROM[row] not in rows:
            raise ConfigError("rows", f"{row} trains at the rate selected for {RATE_FROM[row]}; add {RATE_FROM[row]}")
    swept = names - set(RATE_FROM)
    for row in grid_rows or ():
        if row not in swept:
            raise ConfigError(
                "lr_grid_rows", f"study {study} has no swept row {row!r}; choose from {', '.join(sorted(swept))}"
            )
        if rows and row not in rows:
            raise ConfigError("lr_grid_rows", f"{row} is not one of --rows ({','.join(rows)})")


def training_order(runs):
    """`runs` in the order to train them: every row at its preset's rate (or
    the grid's factor nearest it) first, then the factors further from it,
    each in the study's row order, and last the rows that take another row's
    selected rate; so a study stopped early already compares every method,
    at the paper's rates."""
    return sorted(
        runs, key=lambda r: (r.rate_from is not None, 0.0 if r.lr_factor is None else abs(math.log(r.lr_factor)))
    )


def extend_grids(runs, max_extensions):
    """`runs` plus the rates beyond the grid that the finished runs call
    for: once every run of a swept row has finished and its chosen rate
    (`collect`, as the report chooses) is the smallest or largest of them,
    one more rate beyond that edge, as far from it as its neighbour is (by
    ratio), up to `max_extensions` per row. Derived from the finished runs
    alone, so a restarted study plans the same runs."""
    runs = list(runs)
    while max_extensions:
        added = False
        for row in swept_rows(runs):
            if sum(r.extends_grid for r in row) >= max_extensions or not all(is_finished(r) for r in row):
                continue
            factor = _beyond_edge(sorted({r.lr_factor for r in row}), collect(row)[0][0]["run"].lr_factor)
            if factor is not None:
                runs.insert(max(runs.index(r) for r in row) + 1, _at_factor(row[0], factor))
                added = True
        if not added:
            break
    return runs


def swept_rows(runs):
    """The runs of each row swept over two learning rates or more, one list
    a row (a grid of one factor has no edge to extend or report)."""
    keys = dict.fromkeys((r.group, r.row) for r in runs if r.lr_factor is not None)
    rows = [[r for r in runs if (r.group, r.row) == key] for key in keys]
    return [row for row in rows if len({r.lr_factor for r in row}) > 1]


def _beyond_edge(factors, chosen):
    """The factor one step beyond the edge of `factors` (distinct, sorted)
    that `chosen` lies on, rounded as a user would type it; None when
    `chosen` is inside the grid."""
    if factors[0] < chosen < factors[-1]:
        return None
    factor = factors[0] ** 2 / factors[1] if chosen == factors[0] else factors[-1] ** 2 / factors[-2]
    return float(f"{factor:.6g}")


def _at_factor(run, factor):
    """`run`, a run of a swept row, at another factor of its preset's rate
    (computed as `plan` computes it, so a grid widened to that factor
    later names the same run)."""
    return dataclasses.replace(_at_rate(run, run.preset_rate * factor), lr_factor=factor, extends_grid=True)


def _at_rate(run, rate):
    """`run` at learning rate `rate`, its run id and folder named by it."""
    run_id = f"{run.group}_{run.row}_lr{rate:g}"
    config = dataclasses.replace(
        run.config, learning_rate=rate, model_dir=os.path.join(os.path.dirname(run.config.model_dir), run_id)
    )
    return dataclasses.replace(run, run_id=run_id, config=config)


def resolve_rates(runs):
    """`runs` with each RATE_FROM run set to its source row's selected rate
    (run id and folder named by it), or None where the source row has not
    finished every run yet."""
    best, _ = collect([r for r in runs if r.rate_from is None])
    selected = {(e["run"].group, e["run"].row): e["run"].config.learning_rate for e in best}
    resolved = []
    for run in runs:
        if run.rate_from is None:
            resolved.append(run)
            continue
        sources = [r for r in runs if (r.group, r.row) == (run.group, run.rate_from)]
        if not sources or not all(is_finished(r) for r in sources):
            resolved.append(None)
            continue
        resolved.append(_at_rate(run, selected[(run.group, run.rate_from)]))
    return resolved


def check_output(output_dir, study, epochs_scale, runs=()):
    """Reads, never writes: raises ConfigError unless the study may run in
    output_dir (a new or empty folder, or the same study at the same scale),
    and each of `runs` may run in its folder (`RunDir.check`)."""
    path = os.path.join(output_dir, "study.json")
    wanted = {"study": study, "epochs_scale": epochs_scale}
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ConfigError("output_dir", f"{output_dir} exists and is not a folder")
    if os.path.exists(path):
        recorded = read_json(path)
        if {k: recorded.get(k) for k in wanted} != wanted:
            raise ConfigError(
                "output_dir",
                f"{output_dir} holds the study {recorded.get('study')!r} at epochs_scale="
                f"{recorded.get('epochs_scale')}; use another --output_dir",
            )
    else:
        _check_unclaimed(output_dir)
    for run in runs:
        RunDir(run.config.model_dir).check(run.config)


def _check_unclaimed(output_dir):
    """A folder without study.json must be new, or hold nothing but empty folders."""
    if not os.path.isdir(output_dir):
        return
    runs_dir = os.path.join(output_dir, "runs")
    if os.path.isdir(runs_dir) and any(
        os.path.exists(os.path.join(runs_dir, name, "config.json")) for name in os.listdir(runs_dir)
    ):
        raise ConfigError("output_dir", f"{output_dir} holds runs of an unknown study; use another --output_dir")
    others = sorted(n for n in os.listdir(output_dir) if n != "runs")
    if others:
        raise ConfigError(
            "output_dir",
            f"{output_dir} holds files that are not a study's ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}); use a new or empty --output_dir",
        )


def claim_output(output_dir, study, epochs_scale, lr_grid, max_extensions=None):
    """Records the study in output_dir/study.json, or checks it is the same
    study at the same scale. The learning-rate grid may change between
    invocations (to widen a sweep): runs of learning rates still in the grid
    are reused, and the table reports the current grid only.
    `max_extensions`, when given, is recorded for the invocations that do
    not give it (`recorded_max_extensions`)."""
    check_output(output_dir, study, epochs_scale)
    path = os.path.join(output_dir, "study.json")
    try:
        os.makedirs(output_dir, exist_ok=True)
        recorded = read_json(path) if os.path.exists(path) else {"study": study, "epochs_scale": epochs_scale}
        grids = recorded.get("lr_grids", [])
        updated = dict(recorded, lr_grids=grids if lr_grid in grids else grids + [lr_grid])
        if max_extensions is not None:
            updated["max_extensions"] = max_extensions
        if updated != recorded:
            write_atomic(path, json.dumps(updated, indent=2))
    except OSError as error:
        raise ConfigError("output_dir", f"{output_dir} is not writable ({error.strerror or error})") from None


def recorded_max_extensions(output_dir):
    """The `max_extensions` last given to the study in output_dir, else 0."""
    path = os.path.join(output_dir, "study.json")
    return read_json(path).get("max_extensions", 0) if os.path.exists(path) else 0


def check_settings(output_dir, settings):
    """Reads, never writes: raises ConfigError unless output_dir is new,
    empty, or holds a study with the same `settings`."""
    path = os.path.join(output_dir, "study.json")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ConfigError("output_dir", f"{output_dir} exists and is not a folder")
    if os.path.exists(path):
        recorded = read_json(path)
        differing = differences(recorded, settings)
        if differing:
            raise ConfigError(
                "output_dir",
                f"{output_dir} holds a study with other settings "
                f"({describe_differences(recorded, settings, differing, prefix='')}); use another --output_dir",
            )
    else:
        _check_unclaimed(output_dir)


def claim_settings(output_dir, settings):
    """Records a study's `settings` in output_dir/study.json, or checks that
    the study already there has the same ones."""
    check_settings(output_dir, settings)
    path = os.path.join(output_dir, "study.json")
    if os.path.exists(path):
        return
    try:
        os.makedirs(output_dir, exist_ok=True)
        write_atomic(path, json.dumps(settings, indent=2))
    except OSError as error:
        raise ConfigError("output_dir", f"{output_dir} is not writable ({error.strerror or error})") from None


def is_finished(run):
    return RunDir(run.config.model_dir).finished_summary(run.config.max_updates) is not None


def collect(runs):
    """Finished runs' summaries and histories, the best learning rate per row."""
    best = {}
    every = []
    for run in runs:
        run_dir = RunDir(run.config.model_dir)
        summary = run_dir.finished_summary(run.config.max_updates)
        if summary is None:
            continue
        entry = {"run": run, "summary": summary, "history": run_dir.read_history()}
        every.append(entry)
        key = (run.group, run.row)
        if key not in best or _score(summary) > _score(best[key]["summary"]):
            best[key] = entry
    order = [(r.group, r.row) for r in runs]
    return [best[k] for k in sorted(best, key=order.index)], every


def _score(summary):
    """What picks a row's learning rate: the final validation accuracy where
    the run held a validation split out, else (older runs) the test accuracy."""
    return summary.get("validation_accuracy", summary["test_accuracy"])


def max_test_accuracy(summary):
    """The highest per-epoch test accuracy of a run, under its name in
    summary.json or, in runs before it had one, `best_test_accuracy`."""
    return summary.get("max_test_accuracy_over_epochs_not_for_selection", summary.get("best_test_accuracy"))


def _validation(summary):
    return f"{100 * summary['validation_accuracy']:.2f}%" if "validation_accuracy" in summary else "-"


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
    return "-" if accuracy is None else f"{100 * accuracy:.2f}%"


def _table_row(entry, study):
    config, summary = entry["run"].config, entry["summary"]
    warmup, method = _warmup(config), _method(config)
    power = f"{config.power:g}" if config.lr_schedule == "poly" else f"step {','.join(map(str, config.decay_epochs))}"
    minutes = summary["wall_seconds"] / 60
    return (
        f"| {entry['run'].group} | {method} | {warmup} | {config.learning_rate:g} | {power} | "
        f"{config.batch_size} | {_validation(summary)} | {100 * summary['test_accuracy']:.2f}% | "
        f"{100 * max_test_accuracy(summary):.2f}% | "
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
    lines = [f"# Study `{study}`", ""]
    lines += [f"- {k}: {v}" for k, v in context.items()]
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
