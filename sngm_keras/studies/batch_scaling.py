"""The batch-scaling study: how far each optimizer's batch can grow at a fixed
budget of epochs, measured as Shallue et al. ("Measuring the Effects of Data
Parallelism on Neural Network Training", JMLR 2019) measure it.

For every (method, batch size B) cell the study trains a log-spaced grid of
initial learning rates, all for the same number of epochs (the same number
of gradient computations C for every B: each epoch ends with a smaller batch
of whole micro-batches where B does not divide it), holding a validation split out of
the training images. Two measures per cell:

- the test accuracy of the run whose final *validation* accuracy is the
  highest of its grid (the test split never picks anything);
- steps-to-target: the fewest updates after which the validation accuracy
  first reached the target, over the grid (Shallue's steps-to-result, each
  B at its best learning rate for that measure), or "not reached".

A grid whose best learning rate (by final validation accuracy; ties go to
the smaller rate) lies on its edge is extended by one more rate beyond that
edge, up to `max_extensions` times per cell. A run that learned nothing
(see `learned`) ranks below every run that did, whatever its validation
accuracy: a network that diverged or whose ReLUs all died predicts one
class and scores that class's share of the validation split, which may
beat the chance-level accuracy of another such run at a smaller rate. Where
no run of a grid learned, the grid is extended below its smallest rate.
The grids are `lr_grid`'s, stepping by their own spacing.
"""

import dataclasses
import itertools
import math
import os

from sngm_keras import checks
from sngm_keras.studies import lr_grid
from sngm_keras.studies.folder import finished
from sngm_keras.studies.lr_grid import learned
from sngm_keras.training.config import TrainConfig
from sngm_keras.training.errors import as_config_errors
from sngm_keras.training.rundir import RunDir

METHODS = ("msgd", "lars", "sngm")
BATCH_SIZES = (128, 512, 2048, 8192)
MICRO_BATCH_SIZE = 128
# Four rates spaced by 2, symmetric about the rule's rate (which is not run itself).
LR_FACTORS = tuple(2.0 ** (k - 1.5) for k in range(4))
TARGET = 0.6
# The default B span 2^6 (128 to 8192): a rule whose exponent is off by one
# over that span puts the optimum six grid steps of 2 beyond the grid's edge
# (MSGD's rate may not grow with B at all at a fixed, short budget).
MAX_EXTENSIONS = 6

BASE = dict(
    dataset="cifar10",
    model="twoconv",
    epochs=10,
    weight_decay=1e-4,
    momentum=0.9,
    lr_schedule="poly",
    power=1.1,
    validation_size=5000,
    validations_per_epoch=4,
)

# Where each method's grid is centred: rate(B) = rate0 * (B / B0) ** exponent.
# MSGD: the linear scaling rule (Goyal et al.) from its rate at B = 128;
# SNGM: the square-root rule, eta ~ sqrt(B / C) at fixed C (the paper's
# Corollary 1); LARS: the square-root rule too (You et al.'s practice for
# layer-wise rates). The anchors are the figure1_cpu study's rates on this
# network (docs/RESULTS.md); MSGD's is the geometric mean of its two best
# rates there at B = 128 (0.0125 and 0.025), so its grid holds both.
RULES = {
    "msgd": (0.0125 * 2**0.5, 128, 1.0, "linear"),
    "lars": (2.0, 4096, 0.5, "square root"),
    "sngm": (0.2, 4096, 0.5, "square root"),
}


@dataclasses.dataclass(frozen=True)
class Cell:
    method: str
    batch_size: int


def centre_rate(method, batch_size):
    rate0, batch0, exponent, _ = RULES[method]
    return rate0 * (batch_size / batch0) ** exponent


@as_config_errors()
def check_args(methods, batch_sizes, lr_factors, target, micro_batch_size, max_extensions):
    """Raises ConfigError naming the apps.reproduce flag of the first bad argument."""
    checks.check_values("methods", methods, lambda name, m: checks.check_choice(name, m, METHODS))
    checks.check_positive_int("micro_batch_size", micro_batch_size)
    for b in checks.check_values("batch_sizes", batch_sizes, checks.check_positive_int):
        if b > micro_batch_size:  # a smaller batch is one micro-batch of its own
            checks.check_batch_split(b, micro_batch_size, name="batch_sizes")
    checks.check_values("lr_grid", lr_factors, checks.check_positive, unique=False)
    checks.check_fraction("target_accuracy", target)
    checks.check_non_negative_int("max_extensions", max_extensions)


class Study:
    """The runs of one batch-scaling study under `output_dir/runs`."""

    def __init__(
        self,
        output_dir,
        methods=METHODS,
        batch_sizes=BATCH_SIZES,
        lr_factors=LR_FACTORS,
        target=TARGET,
        micro_batch_size=MICRO_BATCH_SIZE,
        max_extensions=MAX_EXTENSIONS,
        overrides=None,
    ):
        methods, batch_sizes, lr_factors = list(methods), list(batch_sizes), sorted(lr_factors)
        check_args(methods, batch_sizes, lr_factors, target, micro_batch_size, max_extensions)
        self.output_dir = output_dir
        self.methods, self.batch_sizes = methods, batch_sizes
        self.lr_factors = lr_factors
        self.target = float(target)
        self.micro_batch_size = micro_batch_size
        self.max_extensions = max_extensions
        self.overrides = dict(overrides or {})
        self.cells = [Cell(m, b) for m in methods for b in batch_sizes]
        # Extensions step by the grid's own spacing (2 for the default grid).
        ratios = [b / a for a, b in zip(lr_factors, lr_factors[1:])]
        self.spacing = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else 2.0

    def settings(self):
        """What must stay the same when the study is continued in the same folder."""
        config = self.config(self.cells[0], 1.0)
        return {
            "study": "batch_scaling",
            "methods": self.methods,
            "batch_sizes": self.batch_sizes,
            "micro_batch_size": self.micro_batch_size,
            "target_accuracy": self.target,
            "epochs": config.epochs,
            "dataset": config.dataset,
            "model": config.model,
            "validation_size": config.validation_size,
        }

    def config(self, cell, rate):
        micro = self.micro_batch_size if cell.batch_size > self.micro_batch_size else None
        values = dict(
            BASE,
            optimizer=cell.method,
            batch_size=cell.batch_size,
            micro_batch_size=micro,
            learning_rate=float(f"{rate:.6g}"),
        )
        values.update(self.overrides)
        config = TrainConfig.from_preset(None, **values)
        run_id = f"{cell.method}_b{cell.batch_size}_lr{config.learning_rate:g}"
        return dataclasses.replace(config, model_dir=os.path.join(self.output_dir, "runs", run_id))

    def grid(self, cell, factors=None):
        centre = centre_rate(cell.method, cell.batch_size)
        return [self.config(cell, centre * f) for f in (factors or self.lr_factors)]

    def cell_configs(self, cell):
        """The cell's grid plus the extensions its finished runs call for
        (`lr_grid.extend`, by the grid's spacing), and whether the grid's best
        rate still lies on an edge that may not be extended."""
        factors, on_edge = lr_grid.extend(
            self.lr_factors,
            lambda factor: finished(self.grid(cell, [factor])[0]),
            lambda factors, summaries: self._choose(cell, factors, summaries),
            self.max_extensions,
            step=self.spacing,
        )
        return self.grid(cell, sorted(factors)), on_edge

    def _choose(self, cell, factors, summaries):
        """The factor of the run `select` picks; where no run learned, the
        smallest, since a rate too large is what makes a run diverge or die."""
        configs = self.grid(cell, factors)
        if not any(learned(c, s) for c, s in zip(configs, summaries)):
            return min(factors)
        return factors[configs.index(select(configs, summaries))]

    def pending_configs(self):
        """Every run that may be trained now, independently of the others:
        the unfinished runs of each cell's grid, or of its extensions once
        the grid has finished (which extensions follow depends on them)."""
        cells = sorted(self.cells, key=lambda c: c.batch_size)
        return [c for cell in cells for c in self.cell_configs(cell)[0] if finished(c) is None]

    def next_config(self, skip=()):
        """The next run to train: the initial grids first, smallest B first and
        every method at each B (so a study cut short still compares the
        methods), then the extensions; None when the study is complete.
        `skip`: the ids of runs not to train again."""
        grids = (c for cell in sorted(self.cells, key=lambda c: c.batch_size) for c in self.grid(cell))
        extended = (c for cell in self.cells for c in self.cell_configs(cell)[0])
        unfinished = (c for c in itertools.chain(grids, extended) if finished(c) is None)
        return next((c for c in unfinished if os.path.basename(c.model_dir) not in skip), None)

    def results(self):
        """Per cell: every finished run, the selected one, steps-to-target."""
        table = []
        for cell in self.cells:
            configs, on_edge = self.cell_configs(cell)
            runs = [(c, finished(c)) for c in configs]
            done = [(c, s) for c, s in runs if s is not None]
            entry = {
                "cell": cell,
                "rates": [c.learning_rate for c in configs],  # the grid, extensions included
                "runs": [],
                "selected": None,
                "on_edge": on_edge,
                "complete": len(done) == len(runs),
                "learned": any(learned(c, s) for c, s in done),
            }
            for config, summary in done:
                rows = RunDir(config.model_dir).read_validation()
                entry["runs"].append(
                    {"config": config, "summary": summary, "steps_to_target": steps_to_target(rows, self.target)}
                )
            if done:
                chosen = select([c for c, _ in done], [s for _, s in done])
                entry["selected"] = next(r for r in entry["runs"] if r["config"] is chosen)
                reached = [r for r in entry["runs"] if r["steps_to_target"] is not None]
                entry["fastest"] = min(reached, key=lambda r: r["steps_to_target"]) if reached else None
            table.append(entry)
        return table


def select(configs, summaries):
    """The config whose run ended with the highest validation accuracy, runs
    that learned anything before those that did not (ties: the smaller rate)."""
    pairs = sorted(zip(configs, summaries), key=lambda p: p[0].learning_rate)
    return lr_grid.best(pairs, key=lambda p: (learned(*p), p[1]["validation_accuracy"]))[0]


def steps_to_target(rows, target):
    """The update count of the first validation evaluation at or above `target`, or None."""
    for row in sorted(rows, key=lambda r: int(r["updates"])):
        if float(row["validation_accuracy"]) >= target:
            return int(row["updates"])
    return None


def end_noise_scales(table):
    """[(method, B, B_simple)]: the gradient noise scale at the end of each
    cell's selected run, where it was measured (micro-batches below B) and
    is finite, and the run learned something (see `learned`)."""
    out = []
    for entry in table:
        selected = entry["selected"] if entry["learned"] else None
        scale = None if selected is None else selected["summary"].get("gradient_noise_scale")
        if scale is not None and math.isfinite(scale) and scale > 0:
            out.append((entry["cell"].method, entry["cell"].batch_size, scale))
    return out


def scaling_summary(table, methods, batch_sizes, tolerance=0.01):
    """Per method: the largest B whose selected test accuracy is within `tolerance` of the smallest B's."""
    out = {}
    smallest = min(batch_sizes)
    for method in methods:
        selected = _selected_by_batch(table, method)
        if smallest not in selected:
            continue
        base = selected[smallest]["summary"]["test_accuracy"]
        held = [b for b in sorted(selected) if selected[b]["summary"]["test_accuracy"] >= base - tolerance]
        largest = smallest
        for b in sorted(selected):
            if b not in held:
                break
            largest = b
        out[method] = {"base_accuracy": base, "largest_batch_within": largest}
    return out


def _selected_by_batch(table, method, learned_only=False):
    return {
        e["cell"].batch_size: e["selected"]
        for e in table
        if e["cell"].method == method and e["selected"] is not None and (e["learned"] or not learned_only)
    }


def rate_exponent(table, method):
    """The exponent k of the least-squares fit rate = a * B**k through the
    method's selected rates (log-log), or None with fewer than two batch
    sizes; the scaling rules say k = 1 (linear) or 0.5 (square root). A
    cell where no rate learned has no best rate and is left out."""
    selected = _selected_by_batch(table, method, learned_only=True)
    points = [(math.log(b), math.log(s["config"].learning_rate)) for b, s in selected.items()]
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)


def scaling_efficiency(table, method):
    """{B: steps(B0) * B0 / (steps(B) * B)} over the method's cells, steps
    the grid's fewest steps-to-target and B0 the smallest B that reached it:
    1 on the perfect-scaling line (twice the batch, half the steps), 0.5
    where B needs twice the examples B0 needed; None where B did not reach
    the target (every B, when none reached it)."""
    steps = {
        e["cell"].batch_size: (e["fastest"]["steps_to_target"] if e.get("fastest") else None)
        for e in table
        if e["cell"].method == method and e["selected"] is not None
    }
    reached = sorted(b for b, s in steps.items() if s is not None)
    if not reached:
        return dict.fromkeys(sorted(steps))
    base = reached[0] * steps[reached[0]]
    return {b: (None if s is None else base / (b * s)) for b, s in sorted(steps.items())}
