"""Reproduce the paper's comparisons: one command runs a study and writes
its table (results.md) and curves (curves.png).

    python -m apps.reproduce --study=figure1_cpu --data_dir=DIR
    python -m apps.reproduce --study=table2 --data_dir=DIR --lr_grid=0.5,1,2
    python -m apps.reproduce --study=table2 --epochs_scale=0.05   # a quick look

Each run goes through `python -m apps.train` with a flagfile kept beside it.
Finished runs are skipped and an interrupted one resumes from its last
checkpoint, so rerunning the command continues the study.
"""

import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from apps._cli import fail, run  # noqa: E402

from sngm_keras.training.config import ConfigError  # noqa: E402
from sngm_keras.training import study as studies  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("study", None, f"One of {', '.join(studies.STUDIES)}.")
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
flags.DEFINE_integer("verbose", 2, "Keras progress of every run.")
flags.DEFINE_bool("dry_run", False, "Print the plan and stop.")

PASSED = ("data_dir", "download", "dataset", "max_updates", "strategy", "num_cpu_devices", "jit_compile", "verbose")



def flagfile_text(config):
    lines = []
    for name, value in config.to_dict().items():
        if value is None or name == "preset":
            continue
        if isinstance(value, bool):
            lines.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, (list, tuple)):
            lines.append(f"--{name}={','.join(map(str, value))}")
        else:
            lines.append(f"--{name}={value}")
    return "\n".join(lines) + "\n"


def main():
    if FLAGS.study is None:
        fail("--study: required; choose one of " + ", ".join(studies.STUDIES))
    try:
        grid = None if FLAGS.lr_grid is None else [float(f) for f in FLAGS.lr_grid]
    except ValueError:
        fail(f"--lr_grid: must be a list of positive numbers, got {','.join(FLAGS.lr_grid)}")
    output_dir = FLAGS.output_dir or os.path.join("runs", FLAGS.study)
    overrides = {name: FLAGS[name].value for name in PASSED if FLAGS[name].value is not None}
    try:
        runs = studies.plan(FLAGS.study, output_dir, FLAGS.epochs_scale, grid, overrides)
        for run in runs:
            run.config.validate()
        if not FLAGS.dry_run:
            studies.claim_output(output_dir, FLAGS.study, FLAGS.epochs_scale, grid)
    except ConfigError as error:
        fail(str(error))

    print(f"study {FLAGS.study}: {len(runs)} runs into {output_dir}")
    for run in runs:
        state = "finished" if studies.is_finished(run) else "to run"
        c = run.config
        print(f"  {run.run_id:40s} {c.optimizer:5s} B={c.batch_size:<5d} lr={c.learning_rate:<8g} "
              f"epochs={c.epochs:<4d} {state}")
    if FLAGS.dry_run:
        return
    started = time.time()
    for run in runs:
        if studies.is_finished(run):
            continue
        flagfile = os.path.join(output_dir, "runs", f"{run.run_id}.flags")
        with open(flagfile, "w") as f:
            f.write(flagfile_text(run.config))
        print(f"\n== {run.run_id}", flush=True)
        result = subprocess.run([sys.executable, "-m", "apps.train", f"--flagfile={flagfile}"])
        if result.returncode:
            fail(f"run {run.run_id} failed (exit {result.returncode}); rerun the same command to resume")
    context = {
        "command": "python -m apps.reproduce " + " ".join(sys.argv[1:]),
        "data": overrides.get("dataset") or f"{runs[0].config.dataset} (data_dir {overrides.get('data_dir')})",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d"),
        "epochs_scale": FLAGS.epochs_scale,
        "lr_grid": grid,
    }
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(studies.results_markdown(FLAGS.study, runs, context))
    from sngm_keras.training.curves import plot_curves

    plot_curves(studies.curve_groups(runs), os.path.join(output_dir, "curves.png"))
    print(f"\nwrote {output_dir}/results.md and curves.png ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    run(main)
