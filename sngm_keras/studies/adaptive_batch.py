"""The adaptive-batch study: does a batch grown by the measured noise scale
(--batch_growth=noise_scale) end as accurate as a fixed small batch in far
fewer updates?

Per method (SNGM and MSGD by default) the batch-scaling study's cells -- the
fixed B = 128, 512, 2048 and 8192 at its budget of 10 epochs on the
two-convolution network, the same configurations and run ids, so that its
finished runs are reused, not trained again (`fixed_runs_dir`) -- and one
cell more: a batch grown from B = 128 to at most 8192. The grown cell trains
in micro-batches of 64, so that its B = 128 holds the two micro-batches the
noise scale compares; the network has no BatchNorm, so the size of the
micro-batches changes no value a fixed cell computes. Its rate is kept as the
batch grows (--lr_batch_scaling=none: the batch-scaling study found each
method's best rate nearly flat in B), on a grid of four rates spaced by 2
around the geometric mean of the two rates that study selected most
(`GROWN_CENTRES`), extended and chosen on validation as every cell is
(`batch_scaling.Study`'s grids, selection and steps-to-target).
"""

import dataclasses
import os

from sngm_keras.studies import batch_scaling
from sngm_keras.training.config import ConfigError

METHODS = ("msgd", "sngm")
START, MAXIMUM = 128, 8192
GROWN_MICRO_BATCH_SIZE = 64
# The geometric mean of the rates the batch-scaling study selected on this
# network (docs/BATCH_SCALING.md): MSGD 0.0125 and 0.025, SNGM 0.1 and 0.2,
# so that the default grid holds both at its inner points.
GROWN_CENTRES = {"msgd": (0.0125 * 0.025) ** 0.5, "sngm": (0.1 * 0.2) ** 0.5, "lars": 2.0}


@dataclasses.dataclass(frozen=True)
class Cell(batch_scaling.Cell):
    grown_to: int | None = None  # the largest batch of a grown cell; None: a fixed batch

    @property
    def label(self):
        return f"{self.batch_size} grown to <= {self.grown_to}" if self.grown_to else str(self.batch_size)


class Study(batch_scaling.Study):
    """The runs of one adaptive-batch study: the grown cells' under
    `output_dir/runs`, the fixed cells' under `fixed_runs_dir` (default: the
    same folder)."""

    def __init__(
        self,
        output_dir,
        methods=METHODS,
        batch_sizes=batch_scaling.BATCH_SIZES,
        lr_factors=batch_scaling.LR_FACTORS,
        target=batch_scaling.TARGET,
        max_extensions=batch_scaling.MAX_EXTENSIONS,
        overrides=None,
        fixed_runs_dir=None,
    ):
        batch_sizes = sorted(batch_sizes)
        if len(batch_sizes) < 2 or batch_sizes[0] < 2 * GROWN_MICRO_BATCH_SIZE:
            raise ConfigError(
                "batch_sizes",
                f"needs at least two, the smallest (where the grown batch starts) at least "
                f"{2 * GROWN_MICRO_BATCH_SIZE}, got {','.join(map(str, batch_sizes))}",
            )
        super().__init__(
            output_dir,
            methods,
            batch_sizes,
            lr_factors,
            target,
            batch_scaling.MICRO_BATCH_SIZE,
            max_extensions,
            overrides,
        )
        self.start, self.maximum = batch_sizes[0], batch_sizes[-1]
        self.fixed_runs_dir = fixed_runs_dir or os.path.join(output_dir, "runs")
        self.cells += [Cell(m, self.start, self.maximum) for m in self.methods]

    def settings(self):
        return dict(
            super().settings(),
            study="adaptive_batch",
            grown=[self.start, self.maximum],
            grown_micro_batch_size=GROWN_MICRO_BATCH_SIZE,
        )

    def config(self, cell, rate):
        config = super().config(cell, rate)
        if not getattr(cell, "grown_to", None):
            run_dir = os.path.join(self.fixed_runs_dir, os.path.basename(config.model_dir))
            return dataclasses.replace(config, model_dir=run_dir)
        run_id = f"{cell.method}_b{cell.batch_size}to{cell.grown_to}_lr{config.learning_rate:g}"
        return dataclasses.replace(
            config,
            micro_batch_size=GROWN_MICRO_BATCH_SIZE,
            batch_growth="noise_scale",
            max_batch_size=cell.grown_to,
            lr_batch_scaling="none",
            model_dir=os.path.join(self.output_dir, "runs", run_id),
        )

    def grid(self, cell, factors=None):
        if not getattr(cell, "grown_to", None):
            return super().grid(cell, factors)
        return [self.config(cell, GROWN_CENTRES[cell.method] * f) for f in (factors or self.lr_factors)]

    def grown_entries(self, table):
        return [e for e in table if getattr(e["cell"], "grown_to", None)]
