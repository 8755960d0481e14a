"""The batch-growth study as `loop.train_runs` and `report.write_report`
drive it: `batch_scaling_study.BatchScalingStudy`'s face over a
`batch_growth.Study`."""

from sngm_keras.studies import batch_growth, folder
from sngm_keras.studies.batch_scaling import LR_FACTORS, MAX_EXTENSIONS
from sngm_keras.studies.batch_scaling_study import BatchScalingStudy, one_model
from sngm_keras.training.config import ConfigError


class BatchGrowthStudy(BatchScalingStudy):
    name = "batch_growth"
    figure = "batch_growth.png"

    def __init__(
        self,
        output_dir,
        methods=batch_growth.METHODS,
        batch_sizes=(batch_growth.START, batch_growth.MAXIMUM),
        lr_factors=None,
        target=batch_growth.TARGET,
        max_extensions=None,
        models=None,
        overrides=None,
    ):
        """Plans the study and checks its folder, writing nothing; raises
        ConfigError. `batch_sizes`: the start and the maximum."""
        overrides = dict(overrides or {})
        if models is not None:
            overrides["model"] = one_model(models)
        if len(batch_sizes) != 2:
            raise ConfigError("batch_sizes", f"batch_growth takes two: the start and the maximum, got {batch_sizes}")
        self.scaling = batch_growth.Study(
            output_dir,
            methods=methods,
            start=batch_sizes[0],
            maximum=batch_sizes[1],
            lr_factors=LR_FACTORS if lr_factors is None else lr_factors,
            target=target,
            max_extensions=MAX_EXTENSIONS if max_extensions is None else max_extensions,
            overrides=overrides,
        )
        self.output_dir = output_dir
        self.first = self.scaling.config(self.scaling.cells[0], 1.0)
        if not self.first.validation_size:
            raise ConfigError("validation_size", "batch_growth chooses learning rates on a validation split: > 0")
        folder.check_settings(output_dir, self.scaling.settings())

    def describe(self, dry_run=False, images_per_second=None):
        lines = super().describe(dry_run, images_per_second)
        lines[0] = lines[0].replace("study batch_scaling", "study batch_growth", 1)
        grown = [c for c in self.configs() if c.batch_growth != "none"]
        if grown:
            lines.insert(1, f"  (the runs *to{self.scaling.maximum}_* grow their batch by the noise scale)")
        return lines

    def markdown(self, context):
        context = dict(context, model=self.first.model, epochs=self.first.epochs)
        return batch_growth.markdown(self.scaling, self.scaling.results(), context)

    def draw(self, path):
        batch_growth.plot(self.scaling, self.scaling.results(), path)
