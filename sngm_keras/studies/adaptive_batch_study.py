"""The adaptive-batch study as `loop.train_runs` and `report.write_report`
drive it: `batch_scaling_study.BatchScalingStudy`'s face over an
`adaptive_batch.Study`."""

from sngm_keras.studies import adaptive_batch, adaptive_batch_report, folder
from sngm_keras.studies.batch_scaling import BATCH_SIZES, LR_FACTORS, MAX_EXTENSIONS, TARGET
from sngm_keras.studies.batch_scaling_study import BatchScalingStudy, one_model
from sngm_keras.training.config import ConfigError


class AdaptiveBatchStudy(BatchScalingStudy):
    name = "adaptive_batch"
    figure = "adaptive_batch.png"
    report = adaptive_batch_report

    def __init__(
        self,
        output_dir,
        methods=adaptive_batch.METHODS,
        batch_sizes=BATCH_SIZES,
        lr_factors=None,
        target=TARGET,
        max_extensions=None,
        models=None,
        overrides=None,
        fixed_runs_dir=None,
    ):
        """Plans the study and checks its folder, writing nothing; raises
        ConfigError. `batch_sizes`: the fixed ones, the grown batch going
        from the smallest to the largest; `fixed_runs_dir`: where the fixed
        cells' runs are (a batch-scaling study's `runs` folder: its finished
        runs are reused)."""
        overrides = dict(overrides or {})
        if models is not None:
            overrides["model"] = one_model(models)
        self.scaling = adaptive_batch.Study(
            output_dir,
            methods=methods,
            batch_sizes=batch_sizes,
            lr_factors=LR_FACTORS if lr_factors is None else lr_factors,
            target=target,
            max_extensions=MAX_EXTENSIONS if max_extensions is None else max_extensions,
            overrides=overrides,
            fixed_runs_dir=fixed_runs_dir,
        )
        self.output_dir = output_dir
        self.first = self.scaling.config(self.scaling.cells[0], 1.0)
        if not self.first.validation_size:
            raise ConfigError("validation_size", "adaptive_batch chooses learning rates on a validation split: > 0")
        folder.check_settings(output_dir, self.scaling.settings())

    def describe(self, dry_run=False, images_per_second=None):
        lines = super().describe(dry_run, images_per_second)
        lines.insert(
            1,
            f"  (the runs *to{self.scaling.maximum}_* grow their batch by the noise scale; "
            f"the fixed runs are in {self.scaling.fixed_runs_dir})",
        )
        return lines
