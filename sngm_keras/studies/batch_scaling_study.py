"""The batch-scaling study as `loop.train_runs` and `report.write_report`
drive it: a `batch_scaling.Study` with its folder, the runs that can start
now, the next run to train, its plan as lines, its report."""

import os

from sngm_keras.model_names import MODEL_NAMES
from sngm_keras.studies import batch_scaling_report, folder
from sngm_keras.studies.batch_scaling import BATCH_SIZES, LR_FACTORS, MAX_EXTENSIONS, METHODS, TARGET, Study
from sngm_keras.studies.estimate import median_speed, run_cost, runs_left
from sngm_keras.studies.folder import finished
from sngm_keras.training.config import ConfigError

# The two-convolution network's speed on a 2-core CPU (training images/s),
# assumed for the estimate before any run has finished; no guess for another network.
ASSUMED_TWOCONV_SPEED = 2000.0


def one_model(models):
    """The one network of `models` (the --models flag), checked."""
    if len(models) != 1:
        raise ConfigError("models", f"batch_scaling studies one network at a time, got {','.join(models) or 'none'}")
    if models[0] not in MODEL_NAMES:
        raise ConfigError("models", f"unknown model {models[0]!r}; choose one of {', '.join(MODEL_NAMES)}")
    return models[0]


class BatchScalingStudy:
    name = "batch_scaling"
    figure = "batch_scaling.png"
    report = batch_scaling_report  # its markdown(study, table, context) and plot(study, table, path)

    def __init__(
        self,
        output_dir,
        methods=METHODS,
        batch_sizes=BATCH_SIZES,
        lr_factors=None,
        target=TARGET,
        max_extensions=None,
        models=None,
        overrides=None,
    ):
        """Plans the study and checks its folder, writing nothing; raises
        ConfigError. `models`: the one network studied (default twoconv);
        the other arguments are `batch_scaling.Study`'s (None: its default)."""
        overrides = dict(overrides or {})
        if models is not None:
            overrides["model"] = one_model(models)
        self.scaling = Study(
            output_dir,
            methods=methods,
            batch_sizes=batch_sizes,
            lr_factors=LR_FACTORS if lr_factors is None else lr_factors,
            target=target,
            max_extensions=MAX_EXTENSIONS if max_extensions is None else max_extensions,
            overrides=overrides,
        )
        self.output_dir = output_dir
        self.first = self.scaling.config(self.scaling.cells[0], 1.0)
        if not self.first.validation_size:
            raise ConfigError(
                "validation_size", "batch_scaling chooses learning rates on a validation split: it must be > 0"
            )
        folder.check_settings(output_dir, self.scaling.settings())

    @property
    def dataset(self):
        return self.first.dataset

    def configs(self):
        """Every run planned now: each cell's grid and the extensions its finished runs call for."""
        return [c for cell in self.scaling.cells for c in self.scaling.cell_configs(cell)[0]]

    def claim(self):
        """Records the study's settings in its folder's study.json (`folder.claim_settings`)."""
        folder.claim_settings(self.output_dir, self.scaling.settings())

    def ready(self):
        """([(run id, config)] of the runs that can start now, 0 runs waiting
        for another's rate, whether the grids may call for extensions once
        the runs have finished: which they call for depends on those runs)."""
        scaling = self.scaling
        ready = [(os.path.basename(c.model_dir), c) for c in scaling.pending_configs()]
        extensible = any(
            len(scaling.cell_configs(c)[0]) < len(scaling.lr_factors) + scaling.max_extensions for c in scaling.cells
        )
        return ready, 0, extensible

    def next_run(self, trained):
        """(run id, config) of the next run to train (`Study.next_config`),
        none of the ids in `trained`, or None."""
        config = self.scaling.next_config(skip=trained)
        return None if config is None else (os.path.basename(config.model_dir), config)

    def describe(self, dry_run=False, images_per_second=None):
        """The plan as lines: the grid runs, the extensions the finished runs
        already call for, and the time the runs left take (also when not a
        dry run)."""
        scaling, first = self.scaling, self.first
        runs = []  # (config, whether it extends its grid)
        for cell in scaling.cells:
            grid = {c.model_dir for c in scaling.grid(cell)}
            runs += [(c, c.model_dir not in grid) for c in scaling.cell_configs(cell)[0]]
        extensions = sum(extension for _, extension in runs)
        done = [finished(c) for c, _ in runs]
        measured = median_speed(done)
        assumed = ASSUMED_TWOCONV_SPEED if first.model == "twoconv" else None
        speed = images_per_second or measured or assumed
        source = "given" if images_per_second else ("measured" if measured else "assumed")
        left = sum(s is None for s in done)
        cost = run_cost(first)
        grid_runs = len(scaling.cells) * len(scaling.lr_factors)
        lines = [
            f"study {self.name} ({first.model} on {first.dataset}): {len(scaling.cells)} cells x "
            f"{len(scaling.lr_factors)} rates = {grid_runs} runs and "
            f"{extensions} grid extensions so far ({left} to run) into {scaling.output_dir}, plus up to "
            f"{len(scaling.cells) * scaling.max_extensions - extensions} more extensions"
        ]
        for (config, extension), summary in zip(runs, done):
            lines.append(
                f"  {os.path.basename(config.model_dir):28s} B={config.batch_size:<5d} "
                f"lr={config.learning_rate:<9g} epochs={config.epochs} "
                f"{'finished' if summary else 'to run'}{' (extension)' if extension else ''}"
            )
        if cost and not speed:
            lines.append(
                f"estimate: none until a run has finished (no speed known for {first.model}); give --images_per_second"
            )
        elif cost:
            lines.append(
                f"estimate: {left * cost / speed / 3600:.1f} h for {runs_left(left)} at {speed:.0f} training "
                f"images/s ({source}); each further grid extension adds {cost / speed / 60:.0f} min"
            )
        return lines

    def markdown(self, context):
        context = dict(context, model=self.first.model, epochs=self.first.epochs)
        return self.report.markdown(self.scaling, self.scaling.results(), context)

    def draw(self, path):
        self.report.plot(self.scaling, self.scaling.results(), path)
