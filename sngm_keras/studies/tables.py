"""The table studies: the sets of training runs that reproduce the paper's
Tables 2 and 3 and its Figure 1 at CPU scale, planned as `TrainConfig`s, with
each swept row's learning-rate grid (`lr_grid`) and the rows that take the
rate selected for another."""

import dataclasses
import math
import os

from sngm_keras import checks
from sngm_keras.studies import lr_grid
from sngm_keras.studies.folder import finished
from sngm_keras.training.config import ConfigError, TrainConfig
from sngm_keras.training.errors import as_config_errors
from sngm_keras.training.rundir import RunDir


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

# Training images held out to choose learning rates on, where the study's
# presets hold none out and no --validation_size is given.
VALIDATION_SIZE = {"table2": 5000}


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
# model, once that row's runs have finished; named in `grid_rows`, such a
# row is swept over its own preset's rate instead, as any other.
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
    selected for their source row (`resolve_rates`), unless `grid_rows`
    names them."""
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
        if row in RATE_FROM and not (grid_rows and row in grid_rows):
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
        if row in RATE_FROM and RATE_FROM[row] not in rows and row not in (grid_rows or ()):
            raise ConfigError(
                "rows",
                f"{row} trains at the rate selected for {RATE_FROM[row]}; add {RATE_FROM[row]}, "
                "or name it in --lr_grid_rows to sweep it",
            )
    for row in grid_rows or ():
        if row not in names:
            raise ConfigError(
                "lr_grid_rows", f"study {study} has no row {row!r}; choose from {', '.join(sorted(names))}"
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
    for (`lr_grid.extend`): once every run of a swept row has finished and its
    chosen rate (`collect`, as the report chooses) is the smallest or largest
    of them, one more rate beyond that edge, as far from it as its
    neighbour is (by ratio), up to `max_extensions` per row, each placed
    after its row. Extensions already in `runs` are planned anew."""
    if not max_extensions:
        return list(runs)
    runs = [r for r in runs if not r.extends_grid]
    for row in swept_rows(runs):
        factors, _ = lr_grid.extend(
            [r.lr_factor for r in row],
            lambda factor, row=row: finished(_at_factor(row[0], factor).config),
            _choose,
            max_extensions,
        )
        at = max(runs.index(r) for r in row) + 1
        runs[at:at] = [_at_factor(row[0], factor) for factor in factors[len(row) :]]
    return runs


def _choose(factors, summaries):
    """The factor of the run the report selects: the best `validation_score`
    (a tie: the factor listed first)."""
    return lr_grid.best(zip(factors, summaries), key=lambda pair: lr_grid.validation_score(pair[1]))[0]


def swept_rows(runs):
    """The runs of each row swept over two learning rates or more, one list
    a row (a grid of one factor has no edge to extend or report)."""
    keys = dict.fromkeys((r.group, r.row) for r in runs if r.lr_factor is not None)
    rows = [[r for r in runs if (r.group, r.row) == key] for key in keys]
    return [row for row in rows if len({r.lr_factor for r in row}) > 1]


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


def is_finished(run):
    return finished(run.config) is not None


def collect(runs):
    """Finished runs' summaries and histories, and the run each row selects:
    the best `validation_score` (a tie: the run listed first)."""
    every = []
    for run in runs:
        summary = finished(run.config)
        if summary is not None:
            every.append({"run": run, "summary": summary, "history": RunDir(run.config.model_dir).read_history()})
    rows = {}
    for entry in every:
        rows.setdefault((entry["run"].group, entry["run"].row), []).append(entry)
    order = [(r.group, r.row) for r in runs]
    score = lambda entry: lr_grid.validation_score(entry["summary"])
    return [lr_grid.best(rows[key], key=score) for key in sorted(rows, key=order.index)], every
