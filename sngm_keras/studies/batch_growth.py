"""The batch-growth study: does a batch grown by the measured noise scale
(--batch_growth=noise_scale) reach a validation target in fewer updates than
a fixed small batch, and end as accurate as it?

For each method (SNGM and MSGD by default) three cells, all at the same
budget of epochs: a fixed B = `start` (128), a fixed B = `maximum` (4096),
and a batch grown from `start` to at most `maximum`. Every cell is built of
micro-batches of 64, so that the grown batch has two of them at its start
(the noise scale compares micro-batches) and BatchNorm normalizes the same
64 examples in every cell. Each cell trains a grid of learning rates around
one rate per method (flat in B: the batch-scaling study found each
method's best rate nearly flat in B, so the grown cell keeps its rate,
--lr_batch_scaling=none), extended where the best rate lies on an edge,
and chosen on a validation split (`batch_scaling.Study`'s grids,
selection and steps-to-target, which this study reuses). Two measures per
cell: the test accuracy of the run chosen on validation, and the fewest
updates to the validation target over the grid.
"""

import dataclasses
import os

from sngm_keras.studies import batch_scaling
from sngm_keras.studies.lr_grid import learned
from sngm_keras.studies.report import opening, percent
from sngm_keras.training.config import ConfigError

METHODS = ("msgd", "sngm")
START, MAXIMUM = 128, 4096
MICRO_BATCH_SIZE = 64
TARGET = 0.7
# Table 2's rates (MSGD's at B = 128, SNGM's at B = 4096), flat in B.
RATES = {"msgd": 0.1, "sngm": 1.6, "lars": 2.0}
# ResNet-20 on CIFAR-10 at Table 2's budget scaled to the CPU (160 / 8 epochs);
# the rest is the batch-scaling study's (poly schedule, a validation split).
MODEL, EPOCHS = "resnet20", 20


@dataclasses.dataclass(frozen=True)
class Cell(batch_scaling.Cell):
    grown_to: int | None = None  # the largest batch of a grown cell; None: a fixed batch

    @property
    def label(self):
        return f"{self.batch_size} grown to <= {self.grown_to}" if self.grown_to else str(self.batch_size)


class Study(batch_scaling.Study):
    """The runs of one batch-growth study under `output_dir/runs`."""

    def __init__(
        self,
        output_dir,
        methods=METHODS,
        start=START,
        maximum=MAXIMUM,
        lr_factors=batch_scaling.LR_FACTORS,
        target=TARGET,
        max_extensions=batch_scaling.MAX_EXTENSIONS,
        overrides=None,
    ):
        if not MICRO_BATCH_SIZE * 2 <= start < maximum:
            raise ConfigError(
                "batch_sizes", f"needs a start and a larger maximum, the start at least {2 * MICRO_BATCH_SIZE}"
            )
        overrides = {"model": MODEL, "epochs": EPOCHS, **(overrides or {})}
        super().__init__(
            output_dir, methods, [start, maximum], lr_factors, target, MICRO_BATCH_SIZE, max_extensions, overrides
        )
        self.start, self.maximum = start, maximum
        self.cells = [
            Cell(m, b, grown) for m in self.methods for b, grown in ((start, None), (maximum, None), (start, maximum))
        ]

    def settings(self):
        return dict(super().settings(), study="batch_growth", start=self.start, maximum=self.maximum)

    def config(self, cell, rate):
        config = super().config(cell, rate)
        if not getattr(cell, "grown_to", None):
            return config
        grown = dataclasses.replace(config, batch_growth="noise_scale", max_batch_size=cell.grown_to)
        run_id = f"{cell.method}_b{cell.batch_size}to{cell.grown_to}_lr{config.learning_rate:g}"
        return dataclasses.replace(grown, model_dir=os.path.join(self.output_dir, "runs", run_id))

    def grid(self, cell, factors=None):
        return [self.config(cell, RATES[cell.method] * f) for f in (factors or self.lr_factors)]


def _updates_to_target(entry):
    fastest = entry.get("fastest")
    if fastest is None:
        return "not reached"
    return f"{fastest['steps_to_target']} (rate {fastest['config'].learning_rate:g})"


def _batches(summary):
    return summary.get("batch_sizes_used") or "fixed"


def markdown(study, table, context):
    """results.md: per cell the run chosen on validation, and the updates to the target."""
    lines = opening("batch_growth", context)
    total = sum(len(e["runs"]) for e in table)
    lines += [
        f"- runs finished: {total}; target: {percent(study.target)} validation accuracy; micro-batches of "
        f"{study.micro_batch_size}",
        "",
        "| method | B | chosen rate | test accuracy | validation accuracy | updates | updates to target "
        "(fastest over the grid) | batches of the chosen run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in table:
        cell, chosen = entry["cell"], entry["selected"]
        if chosen is None:
            lines.append(f"| {cell.method.upper()} | {cell.label} | not run yet | | | | | |")
            continue
        summary, config = chosen["summary"], chosen["config"]
        edge = " (edge of grid)" if entry["on_edge"] else ""
        failed = "" if entry["learned"] else " (no rate learned)"
        lines.append(
            f"| {cell.method.upper()} | {cell.label} | {config.learning_rate:g}{edge}{failed} | "
            f"{percent(summary['test_accuracy'])} | {percent(summary['validation_accuracy'])} | "
            f"{summary['updates']} | {_updates_to_target(entry)} | {_batches(summary)} |"
        )
    lines += ["", "Every run:", "", "| run | learned | validation accuracy | test accuracy | updates | batches |"]
    lines.append("|---|---|---|---|---|---|")
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
    """Validation accuracy against updates of each cell's chosen run (log
    updates: the grown batch's saving is a factor)."""
    from sngm_keras.training.curves import plt, save_figure
    from sngm_keras.training.rundir import RunDir

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for entry in table:
        if entry["selected"] is None:
            continue
        rows = RunDir(entry["selected"]["config"].model_dir).read_validation()
        ax.plot(
            [int(r["updates"]) for r in rows],
            [100 * float(r["validation_accuracy"]) for r in rows],
            label=f"{entry['cell'].method.upper()}, B = {entry['cell'].label}",
        )
    ax.axhline(100 * study.target, color="gray", linestyle=":", label="target")
    ax.set(xscale="log", xlabel="updates", ylabel="validation accuracy (%)", title="Batch growth by the noise scale")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
