"""Reproduce the paper's comparisons: one command runs a study and writes
its table (results.md) and curves (curves.png).

    python -m apps.reproduce --study=figure1_cpu --data_dir=DIR
    python -m apps.reproduce --study=table2 --data_dir=DIR --lr_grid=0.5,1,2
    python -m apps.reproduce --study=table2 --epochs_scale=0.05   # a quick look
    python -m apps.reproduce --study=batch_scaling --data_dir=DIR  # Shallue-style batch scaling

Each run goes through `python -m apps.train` with a flagfile kept beside it.
Finished runs are skipped and an interrupted one resumes from its last
checkpoint, so rerunning the command continues the study. `--export_commands`
prints those apps.train commands instead, to run elsewhere or side by side.
"""

import os
import platform
import sys
import time

from absl import flags

from apps._cli import fail, run
from apps._study_runs import counted, export, note_new
from apps._study_runs import train as train_run
from sngm_keras.training import batch_scaling as scaling
from sngm_keras.training import study as studies
from sngm_keras.training.config import ConfigError

FLAGS = flags.FLAGS
STUDY_NAMES = (*studies.STUDIES, "batch_scaling")
flags.DEFINE_string("study", None, f"One of {', '.join(STUDY_NAMES)}.")
flags.DEFINE_string("output_dir", None, "Where the runs, results.md and curves.png go (default runs/<study>).")
flags.DEFINE_float("epochs_scale", 1.0, "Multiply every run's epochs (and decay / warm-up epochs) by this.")
flags.DEFINE_list("lr_grid", None, "Factors of each row's initial learning rate to sweep; best reported.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir passed to every run.")
flags.DEFINE_bool("download", False, "Let TFDS download the dataset.")
flags.DEFINE_string("dataset", None, "Override the study's dataset (e.g. a folder).")
flags.DEFINE_integer("max_updates", None, "Stop every run after this many updates (smoke tests).")
flags.DEFINE_string("strategy", None, "Passed to every run.")
flags.DEFINE_integer("num_cpu_devices", None, "Passed to every run.")
flags.DEFINE_bool("jit_compile", None, "Passed to every run.")
flags.DEFINE_integer(
    "verbose",
    None,
    "Keras progress of every run: 0 silent, 1 a progress bar, 2 a line per epoch (default: 1 on a terminal, else 2).",
)
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
    "the others run at their preset's rate (default: every row trained).",
)
flags.DEFINE_integer(
    "validation_size",
    None,
    "Training images held out to choose learning rates on "
    "(default: 5000 for table2 and batch_scaling, none for the others).",
)
# batch_scaling
flags.DEFINE_list("methods", list(scaling.METHODS), "batch_scaling: the optimizers compared.")
flags.DEFINE_list("batch_sizes", [str(b) for b in scaling.BATCH_SIZES], "batch_scaling: the batch sizes B.")
flags.DEFINE_integer("epochs", None, "batch_scaling: the epoch budget of every run (default 10).")
flags.DEFINE_float("target_accuracy", scaling.TARGET, "batch_scaling: validation accuracy of steps-to-target.")
flags.DEFINE_integer(
    "max_extensions",
    None,
    "How often a learning-rate grid whose chosen rate is on its edge is extended by one rate beyond it "
    f"(default: {scaling.MAX_EXTENSIONS} for batch_scaling; 0 for table studies, their grid as given).",
    lower_bound=0,
)
flags.DEFINE_float(
    "images_per_second",
    None,
    "--dry_run: training speed assumed for the time estimate (default: the median of the finished runs of "
    "the same model; batch_scaling on the two-conv network assumes 2000 before any).",
)

PASSED = ("data_dir", "download", "dataset", "max_updates", "strategy", "num_cpu_devices", "jit_compile", "verbose")


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
    if FLAGS.study == "batch_scaling":
        return batch_scaling(output_dir, grid, overrides)
    if FLAGS.study in ("table2",) and FLAGS.validation_size is None:
        overrides["validation_size"] = 5000
    try:
        runs = studies.plan(
            FLAGS.study,
            output_dir,
            FLAGS.epochs_scale,
            grid,
            overrides,
            models=FLAGS.models,
            grid_rows=FLAGS.lr_grid_rows,
            rows=FLAGS.rows,
        )
    except ConfigError as error:
        fail(_message(error))
    try:
        studies.check_output(output_dir, FLAGS.study, FLAGS.epochs_scale)
    except ConfigError as error:
        fail(_message(error))
    _check_runs([r.config for r in runs])
    max_extensions = _max_extensions(runs, output_dir)
    try:
        if not FLAGS.dry_run:
            note_new(output_dir, os.path.join(output_dir, "study.json"))
            studies.claim_output(output_dir, FLAGS.study, FLAGS.epochs_scale, grid, FLAGS.max_extensions)
    except ConfigError as error:
        fail(_message(error))

    def extend(runs):
        extended = studies.extend_grids(runs, max_extensions)
        _check_runs([r.config for r in extended if r not in runs])
        return extended

    if FLAGS.export_commands:
        runs = extend(runs)
        resolved = studies.resolve_rates(runs)
        ready = [r for r in studies.training_order(runs) if r.rate_from is None]
        ready += [r for r in resolved if r is not None and r.rate_from is not None]
        ready = [(r.run_id, r.config) for r in ready if not studies.is_finished(r)]
        waiting = sum(r is None for r in resolved)
        then = {0: None, 1: "the run that takes a selected rate"}.get(
            waiting, f"the {waiting} runs that take a selected rate"
        )
        if ready and _extensible(runs, max_extensions):
            then = "the grid extensions they may call for" + (f" and {then}" if then else "")
        return export(ready, then, output_dir)

    runs = extend(runs)
    print(f"study {FLAGS.study}: {counted(len(runs), 'run')} into {output_dir}")
    for planned, resolved in zip(runs, studies.resolve_rates(runs)):
        c = (resolved or planned).config
        state = "finished" if resolved and studies.is_finished(resolved) else "to run"
        rate = f"lr={c.learning_rate:<8g}" if resolved else f"lr=that selected for {planned.rate_from}"
        print(
            f"  {(resolved or planned).run_id:40s} {c.optimizer:5s} B={c.batch_size:<5d} {rate} "
            f"epochs={c.epochs:<4d} {state}{' (extension)' if planned.extends_grid else ''}"
        )
    if FLAGS.dry_run:
        _print_estimate([resolved or planned for planned, resolved in zip(runs, studies.resolve_rates(runs))])
        if more := _extensible(runs, max_extensions):
            print(f"plus up to {counted(more, 'grid extension')} as the grids finish")
        return
    started = time.time()
    # The rows with their own rates first (the presets' rates before the
    # grid's other factors, then the extensions those call for), then those
    # that take a selected rate.
    trained = set()  # each at most once: apps.train may end a run early (see its summary)
    while not FLAGS.report_only:
        left = [
            r
            for r in studies.training_order(runs)
            if r.rate_from is None and r.run_id not in trained and not studies.is_finished(r)
        ]
        if not left:
            break
        train_run(left[0].run_id, left[0].config, output_dir)
        trained.add(left[0].run_id)
        runs = extend(runs)
    resolved = studies.resolve_rates(runs)
    waiting = sum(r is None for r in resolved)
    runs = [r for r in resolved if r is not None]
    for planned in runs:
        if not studies.is_finished(planned) and not FLAGS.report_only:
            train_run(planned.run_id, planned.config, output_dir)
    context = dict(
        _context(overrides, runs[0].config.dataset),
        epochs_scale=FLAGS.epochs_scale,
        lr_grid=grid,
        lr_grid_rows=",".join(FLAGS.lr_grid_rows or FLAGS.rows or ["all"]),
    )
    if max_extensions:
        context["max_extensions"] = max_extensions
    if FLAGS.rows:
        context["rows"] = ",".join(FLAGS.rows)
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(studies.results_markdown(FLAGS.study, runs, context, waiting))
    from sngm_keras.training.curves import plot_curves

    groups = studies.curve_groups(runs)
    if groups:
        plot_curves(groups, os.path.join(output_dir, "curves.png"))
    print(f"\nwrote {output_dir}/results.md and curves.png ({time.time() - started:.0f} s)")


def _max_extensions(runs, output_dir):
    """--max_extensions, or the value a previous invocation recorded; a
    mistake when no row is swept over two rates or more."""
    given = FLAGS.max_extensions
    if given and not studies.swept_rows(runs):
        fail("--max_extensions: no row is swept over two rates or more (--lr_grid, --lr_grid_rows)")
    return studies.recorded_max_extensions(output_dir) if given is None else given


def _extensible(runs, max_extensions):
    """How many more grid extensions the unfinished rows may still call for."""
    return sum(
        max_extensions - sum(r.extends_grid for r in row)
        for row in studies.swept_rows(runs)
        if not all(studies.is_finished(r) for r in row)
    )


# Training and test images of the datasets whose size is known without loading them.
SPLIT_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "imagenet2012": (1_281_167, 50_000)}


def run_cost(config):
    """A run's work in training images: its training examples plus its
    evaluations (forward passes, about a third of a training step each);
    None for a dataset whose size is not known before loading it."""
    if config.dataset not in SPLIT_SIZES:
        return None
    train, test = SPLIT_SIZES[config.dataset]
    evaluated = config.validations_per_epoch * config.validation_size + test / config.eval_every
    return config.epochs * (train - config.validation_size + evaluated / 3)


def _left(count):
    return "the run left" if count == 1 else f"the {count} runs left"


def _median_speed(summaries):
    rates = sorted(s["examples_per_second"] for s in summaries if s and s.get("examples_per_second"))
    return rates[len(rates) // 2] if rates else None


def _print_estimate(runs):
    """The time the runs left would take, per model, at --images_per_second
    or the speed its finished runs measured (a run that takes another row's
    rate costs the same at any rate)."""
    from sngm_keras.training.rundir import RunDir

    left, finished = {}, {}
    for planned in runs:
        summary = RunDir(planned.config.model_dir).finished_summary(planned.config.max_updates)
        (finished if summary else left).setdefault(planned.group, []).append(summary or planned.config)
    for model, configs in left.items():
        speed = FLAGS.images_per_second or _median_speed(finished.get(model, []))
        costs = [run_cost(c) for c in configs]
        if speed is None or None in costs:
            why = "its dataset's size is not known" if None in costs else "no finished run to measure its speed from"
            print(f"estimate for {model}: none ({why}); give --images_per_second for one")
            continue
        source = "given" if FLAGS.images_per_second else "measured"
        print(
            f"estimate for {model}: {sum(costs) / speed / 3600:.1f} h for {_left(len(configs))} at "
            f"{speed:.0f} training images/s ({source})"
        )


def _batch_sizes():
    try:
        return [int(b) for b in FLAGS.batch_sizes]
    except ValueError:
        fail(f"--batch_sizes: must be a list of positive integers, got {','.join(FLAGS.batch_sizes)}")


ASSUMED_TWOCONV_SPEED = 2000.0  # training images/s


def _one_model(models):
    from sngm_keras.model_names import MODEL_NAMES

    if len(models) != 1:
        fail(f"--models: batch_scaling studies one network at a time, got {','.join(models) or 'none'}")
    if models[0] not in MODEL_NAMES:
        fail(f"--models: unknown model {models[0]!r}; choose one of {', '.join(MODEL_NAMES)}")
    return models[0]


def batch_scaling(output_dir, grid, overrides):
    from sngm_keras.training import batch_scaling_report as report

    for name in ("rows", "lr_grid_rows"):
        if FLAGS[name].value is not None:
            fail(f"--{name}: table studies only; batch_scaling takes --methods and --batch_sizes")
    if FLAGS.epochs is not None:
        overrides["epochs"] = FLAGS.epochs
    if FLAGS.models is not None:
        overrides["model"] = _one_model(FLAGS.models)
    try:
        study = scaling.Study(
            output_dir,
            methods=FLAGS.methods,
            batch_sizes=_batch_sizes(),
            lr_factors=scaling.LR_FACTORS if grid is None else grid,
            target=FLAGS.target_accuracy,
            max_extensions=scaling.MAX_EXTENSIONS if FLAGS.max_extensions is None else FLAGS.max_extensions,
            overrides=overrides,
        )
        if not study.config(study.cells[0], 1.0).validation_size:
            raise ConfigError(
                "validation_size", "batch_scaling chooses learning rates on a validation split: it must be > 0"
            )
        studies.check_settings(output_dir, study.settings())
    except ConfigError as error:
        fail(_message(error))
    _check_runs([c for cell in study.cells for c in study.grid(cell)])
    if not FLAGS.dry_run:
        try:
            note_new(output_dir, os.path.join(output_dir, "study.json"))
            studies.claim_settings(output_dir, study.settings())
        except ConfigError as error:
            fail(_message(error))
    if FLAGS.export_commands:
        ready = [(os.path.basename(c.model_dir), c) for c in study.pending_configs()]
        # Which grids are extended depends on the runs still to train.
        extensible = any(
            len(study.cell_configs(c)[0]) < len(study.lr_factors) + study.max_extensions for c in study.cells
        )
        return export(ready, "the grid extensions they may call for" if ready and extensible else None, output_dir)
    _print_plan(study)
    if FLAGS.dry_run:
        return
    started = time.time()
    while not FLAGS.report_only and (config := study.next_config()) is not None:
        train_run(os.path.basename(config.model_dir), config, output_dir)
    table = study.results()
    first = study.config(study.cells[0], 1.0)
    context = dict(_context(overrides, first.dataset), model=first.model, epochs=first.epochs)
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(report.markdown(study, table, context))
    report.plot(study, table, os.path.join(output_dir, "batch_scaling.png"))
    print(f"\nwrote {output_dir}/results.md and batch_scaling.png ({time.time() - started:.0f} s)")


def _print_plan(study):
    """The grid runs, the extensions the finished runs already call for, and
    the time the runs left take."""
    first = study.config(study.cells[0], 1.0)
    runs = []  # (config, whether it extends its grid)
    for cell in study.cells:
        grid = {c.model_dir for c in study.grid(cell)}
        runs += [(c, c.model_dir not in grid) for c in study.cell_configs(cell)[0]]
    extensions = sum(extension for _, extension in runs)
    done = [scaling.finished(c) for c, _ in runs]
    measured = _median_speed(done)
    # The default network's speed on a 2-core CPU; no guess for another network.
    assumed = ASSUMED_TWOCONV_SPEED if first.model == "twoconv" else None
    speed = FLAGS.images_per_second or measured or assumed
    source = "given" if FLAGS.images_per_second else ("measured" if measured else "assumed")
    left = sum(s is None for s in done)
    cost = run_cost(first)
    grid_runs = len(study.cells) * len(study.lr_factors)
    print(
        f"study batch_scaling ({first.model} on {first.dataset}): {len(study.cells)} cells x "
        f"{len(study.lr_factors)} rates = {grid_runs} runs and "
        f"{extensions} grid extensions so far ({left} to run) into {study.output_dir}, plus up to "
        f"{len(study.cells) * study.max_extensions - extensions} more extensions"
    )
    for (config, extension), summary in zip(runs, done):
        print(
            f"  {os.path.basename(config.model_dir):28s} B={config.batch_size:<5d} lr={config.learning_rate:<9g} "
            f"epochs={config.epochs} {'finished' if summary else 'to run'}{' (extension)' if extension else ''}"
        )
    if cost and not speed:
        print(f"estimate: none until a run has finished (no speed known for {first.model}); give --images_per_second")
    elif cost:
        print(
            f"estimate: {left * cost / speed / 3600:.1f} h for {_left(left)} at {speed:.0f} training "
            f"images/s ({source}); each further grid extension adds {cost / speed / 60:.0f} min"
        )


if __name__ == "__main__":
    run(main, interrupted=_interrupted)
