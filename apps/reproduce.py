"""Reproduce the paper's comparisons: one command runs a study and writes
its table (results.md) and curves (curves.png).

    python -m apps.reproduce --study=figure1_cpu --data_dir=DIR
    python -m apps.reproduce --study=table2 --data_dir=DIR --lr_grid=0.5,1,2
    python -m apps.reproduce --study=table2 --epochs_scale=0.05   # a quick look
    python -m apps.reproduce --study=batch_scaling --data_dir=DIR  # Shallue-style batch scaling
    python -m apps.reproduce --study=adaptive_batch --data_dir=DIR --fixed_runs_dir=docs/batch_scaling/runs
        # batch_scaling's fixed batches against one grown by the noise scale

The studies are `sngm_keras.studies`'s; this app is their command line, and
each run goes through `python -m apps.train` with a flagfile kept beside it.
Finished runs are skipped and an interrupted one resumes from its last
checkpoint, so rerunning the command continues the study. `--export_commands`
prints those apps.train commands instead, to run elsewhere or side by side.
"""

import os
import platform
import sys
import time

from absl import flags

from apps import _config_flags
from apps._cli import fail, run
from apps._config_flags import define_config_flags
from apps._study_runs import export, note_new
from apps._study_runs import train as train_run
from sngm_keras.studies import adaptive_batch
from sngm_keras.studies import batch_scaling as scaling
from sngm_keras.studies.adaptive_batch_study import AdaptiveBatchStudy
from sngm_keras.studies.batch_scaling_study import BatchScalingStudy
from sngm_keras.studies.loop import train_runs
from sngm_keras.studies.report import write_report
from sngm_keras.studies.table_study import TableStudy
from sngm_keras.studies.tables import STUDIES
from sngm_keras.training.config import ConfigError

FLAGS = flags.FLAGS
STUDY_NAMES = (*STUDIES, "batch_scaling", "adaptive_batch")
flags.DEFINE_string("study", None, f"One of {', '.join(STUDY_NAMES)}.")
flags.DEFINE_string("output_dir", None, "Where the runs, results.md and curves.png go (default runs/<study>).")
flags.DEFINE_float("epochs_scale", 1.0, "Multiply every run's epochs (and decay / warm-up epochs) by this.")
flags.DEFINE_list("lr_grid", None, "Factors of each row's initial learning rate to sweep; best reported.")
# Settings given to every run of the study, declared from TrainConfig's fields.
PASSED = ("data_dir", "download", "dataset", "max_updates", "strategy", "num_cpu_devices", "jit_compile", "verbose")
define_config_flags(PASSED, defaults=dict.fromkeys(PASSED), help_suffix=" Given to every run (default: the study's).")
flags.adopt_module_key_flags(_config_flags)  # listed by --help as this app's own
flags.DEFINE_bool("dry_run", False, "Print the plan (and for batch_scaling a time estimate) and stop.")
flags.DEFINE_bool("report_only", False, "Write results.md and the figure from the runs finished so far; train nothing.")
flags.DEFINE_bool(
    "export_commands",
    False,
    "Train nothing: write the flagfile and print the apps.train command of every run that can start now, one a "
    "line, to run elsewhere or in parallel (one per GPU, a cluster job array); --report_only then collects them.",
)
flags.DEFINE_list(
    "models",
    None,
    "Table studies: train only the rows of these models (e.g. resnet20); "
    "batch_scaling: the one network to study (default twoconv).",
)
flags.DEFINE_list(
    "rows",
    None,
    "Table studies: train only these rows of each model (e.g. msgd_b128,msgd_b4096), "
    "for instance to repeat some at another --epochs_scale (default: all rows).",
)
flags.DEFINE_list(
    "lr_grid_rows",
    None,
    "Table studies: the rows --lr_grid sweeps (e.g. msgd_b4096,sngm_b4096); "
    "the others run at their preset's rate, lars_pytorch_b4096 at the rate chosen for lars_b4096 "
    "(default: every row trained but lars_pytorch_b4096).",
)
flags.DEFINE_integer(
    "validation_size",
    None,
    "Training images held out to choose learning rates on "
    "(default: 5000 for table2 and batch_scaling, none for the others).",
)
# batch_scaling
flags.DEFINE_list(
    "methods",
    list(scaling.METHODS),
    f"batch_scaling: the optimizers compared (adaptive_batch: {','.join(adaptive_batch.METHODS)}).",
)
flags.DEFINE_list(
    "batch_sizes",
    [str(b) for b in scaling.BATCH_SIZES],
    "batch_scaling: the batch sizes B; adaptive_batch: the fixed ones, the grown batch going from the smallest "
    "to the largest.",
)
flags.DEFINE_integer("epochs", None, "batch_scaling, adaptive_batch: the epoch budget of every run (default 10).")
flags.DEFINE_float(
    "target_accuracy",
    scaling.TARGET,
    "batch_scaling, adaptive_batch: validation accuracy of steps-to-target.",
)
flags.DEFINE_integer(
    "max_extensions",
    None,
    "How often a learning-rate grid whose chosen rate is on its edge is extended by one rate beyond it "
    f"(default: {scaling.MAX_EXTENSIONS} for batch_scaling; 0 for table studies, their grid as given).",
    lower_bound=0,
)
flags.DEFINE_string(
    "fixed_runs_dir",
    None,
    "adaptive_batch: the folder of the fixed-batch runs, a batch_scaling study's runs/ (its finished runs are "
    "reused, the missing ones trained there; default: the study's own runs/).",
)
flags.DEFINE_float(
    "images_per_second",
    None,
    "--dry_run: training speed assumed for the time estimate (default: the median of the finished runs of "
    "the same model; batch_scaling on the two-conv network assumes 2000 before any).",
)


# How errors about a run's settings name this app's flags.
RENAMED = {"model_dir": "output_dir"}


def _message(error, run_id=None):
    """A ConfigError's line, naming this app's flag, or the run whose preset
    setting is at fault."""
    text = str(error)
    field = getattr(error, "field", None)
    if field in RENAMED:
        return f"--{RENAMED[field]}: {text.split(': ', 1)[1]}"
    if field is None or field in FLAGS or run_id is None:
        return text
    return f"--study={FLAGS.study}: run {run_id}: {text}"


def _check_runs(configs):
    """Validates every run, refuses this app's flags that the runs ignore,
    and checks each run's folder; writes nothing."""
    from sngm_keras.training.rundir import RunDir

    for config in configs:
        run_id = os.path.basename(config.model_dir)
        try:
            config.validate()
            RunDir(config.model_dir).check(config)
        except ConfigError as error:
            fail(_message(error, run_id))
        ignored = config.ignored_fields()
        for name in PASSED:
            if FLAGS[name].present and name in ignored:
                fail(f"--{name}: {ignored[name]}; drop it")


def _interrupted():
    return (
        "interrupted; rerun the same command to continue the study (finished runs are kept, an interrupted "
        "one resumes from its last checkpoint)"
    )


def _context(overrides, dataset):
    return {
        "command": "python -m apps.reproduce " + " ".join(sys.argv[1:]),
        "data": overrides.get("dataset") or f"{dataset} (data_dir {overrides.get('data_dir')})",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d"),
    }


def _grid():
    try:
        return None if FLAGS.lr_grid is None else [float(f) for f in FLAGS.lr_grid]
    except ValueError:
        fail(f"--lr_grid: must be a list of positive numbers, got {','.join(FLAGS.lr_grid)}")


def _batch_sizes():
    try:
        return [int(b) for b in FLAGS.batch_sizes]
    except ValueError:
        fail(f"--batch_sizes: must be a list of positive integers, got {','.join(FLAGS.batch_sizes)}")


def _study(output_dir, grid, overrides):
    """The study the flags name, planned and its folder checked (ConfigError)."""
    if FLAGS.fixed_runs_dir is not None and FLAGS.study != "adaptive_batch":
        fail("--fixed_runs_dir: adaptive_batch only")
    if FLAGS.study not in ("batch_scaling", "adaptive_batch"):
        return TableStudy(
            FLAGS.study,
            output_dir,
            FLAGS.epochs_scale,
            grid,
            overrides,
            models=FLAGS.models,
            grid_rows=FLAGS.lr_grid_rows,
            rows=FLAGS.rows,
            max_extensions=FLAGS.max_extensions,
        )
    for name in ("rows", "lr_grid_rows"):
        if FLAGS[name].value is not None:
            fail(f"--{name}: table studies only; batch_scaling takes --methods and --batch_sizes")
    if FLAGS.epochs is not None:
        overrides["epochs"] = FLAGS.epochs
    common = dict(
        batch_sizes=_batch_sizes(),
        lr_factors=grid,
        target=FLAGS.target_accuracy,
        max_extensions=FLAGS.max_extensions,
        models=FLAGS.models,
        overrides=overrides,
    )
    if FLAGS.study == "adaptive_batch":
        methods = FLAGS.methods if FLAGS["methods"].present else adaptive_batch.METHODS
        return AdaptiveBatchStudy(output_dir, methods=methods, fixed_runs_dir=FLAGS.fixed_runs_dir, **common)
    return BatchScalingStudy(output_dir, methods=FLAGS.methods, **common)


def _then(ready, waiting, extensible):
    """What follows the exported runs, or None when nothing waits for them."""
    then = {0: None, 1: "the run that takes a selected rate"}.get(
        waiting, f"the {waiting} runs that take a selected rate"
    )
    if ready and extensible:
        then = "the grid extensions they may call for" + (f" and {then}" if then else "")
    return then


def main():
    if FLAGS.study is None:
        fail("--study: required; choose one of " + ", ".join(STUDY_NAMES))
    if FLAGS.study not in STUDY_NAMES:
        fail(f"--study: must be one of {', '.join(STUDY_NAMES)}, got {FLAGS.study!r}")
    if FLAGS.export_commands and (FLAGS.dry_run or FLAGS.report_only):
        fail("--export_commands: trains nothing itself; use it without --dry_run and --report_only")
    grid = _grid()
    output_dir = FLAGS.output_dir or os.path.join("runs", FLAGS.study)
    if FLAGS.export_commands:  # the commands and their flagfiles hold no path relative to this folder
        output_dir = os.path.abspath(output_dir)
    overrides = {name: FLAGS[name].value for name in PASSED if FLAGS[name].value is not None}
    if FLAGS.validation_size is not None:
        overrides["validation_size"] = FLAGS.validation_size
    try:
        study = _study(output_dir, grid, overrides)
    except ConfigError as error:
        fail(_message(error))
    _check_runs(study.configs())
    if not FLAGS.dry_run:
        try:
            note_new(output_dir, os.path.join(output_dir, "study.json"))
            study.claim()
        except ConfigError as error:
            fail(_message(error))
    if FLAGS.export_commands:
        ready, waiting, extensible = study.ready()
        return export(ready, _then(ready, waiting, extensible), output_dir)
    print("\n".join(study.describe(FLAGS.dry_run, FLAGS.images_per_second)))
    if FLAGS.dry_run:
        return
    started = time.time()
    if not FLAGS.report_only:
        train_runs(study, lambda run_id, config: train_run(run_id, config, output_dir), _check_runs)
    written = write_report(study, _context(overrides, study.dataset))
    print(f"\nwrote {output_dir}/{' and '.join(written)} ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    run(main, interrupted=_interrupted)
