"""Copies finished runs' records out of a study's folder, for publishing.

A record is what `apps.train` writes beside its checkpoints: config.json,
summary.json, history.csv and validation.csv (where a validation split was
held out). Only finished runs (summary.json's `complete`) are copied; the
flags that hold this machine's paths are replaced, `data_dir` (and a
`dataset` given as a folder) by ``DIR`` and `model_dir` by
``--model_dir_as/<run>``, so that a record names no machine.
A record already in --records is left as it is when it is the same, and is
never overwritten when it differs.

    python -m tools.export_records --study_runs=OUT/runs --records=docs/table2/160_epochs/runs \\
        --model_dir_as=runs/table2_160/runs
"""

import json
import os

from absl import flags

from apps._cli import fail, run

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "study_runs", None, "A folder of runs (each a subfolder written by apps.train), e.g. a study's OUT/runs."
)
flags.DEFINE_string("records", None, "The folder the records go to (created if missing).")
flags.DEFINE_string("model_dir_as", "runs", "What the records show as the folder of their runs.")
flags.DEFINE_list("only", None, "Export only these runs (names of subfolders of --study_runs).")

RECORD_FILES = ("config.json", "history.csv", "validation.csv")
DATA_DIR_AS = "DIR"


def read_json(path):
    """The object in `path`; ValueError naming the file where it is not JSON."""
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not JSON ({err})") from None


def finished_runs(runs, only=None):
    """Names of the subfolders of `runs` whose summary says complete."""
    names = []
    for name in sorted(os.listdir(runs)):
        path = os.path.join(runs, name, "summary.json")
        if (only is None or name in only) and os.path.isfile(path) and read_json(path).get("complete"):
            names.append(name)
    return names


def without_paths(values, name, model_dir_as):
    """Whether `values` (a run's flags or config) held a path, now replaced."""
    replaced = {}
    if values.get("data_dir") is not None:
        replaced["data_dir"] = DATA_DIR_AS
    if isinstance(values.get("dataset"), str) and os.path.isabs(values["dataset"]):  # a folder of images
        replaced["dataset"] = DATA_DIR_AS
    if values.get("model_dir") is not None:
        replaced["model_dir"] = f"{model_dir_as}/{name}"
    values.update(replaced)
    return bool(replaced)


def record(run_dir, name, model_dir_as):
    """{file name: text} of one run's record, its paths replaced."""
    files = {}
    for file in RECORD_FILES:
        path = os.path.join(run_dir, file)
        if os.path.isfile(path):
            with open(path) as f:
                files[file] = f.read()
    config = read_json(os.path.join(run_dir, "config.json"))
    if without_paths(config, name, model_dir_as):
        files["config.json"] = json.dumps(config, indent=2, sort_keys=True)  # as apps.train writes it
    summary = read_json(os.path.join(run_dir, "summary.json"))
    without_paths(summary.get("flags", {}), name, model_dir_as)
    files["summary.json"] = json.dumps(summary, indent=2)  # as apps.train writes it
    return files


def export(runs, output, model_dir_as, only=None):
    """Copies the finished runs' records; returns (copied, already there).
    Raises ValueError, before writing anything, where a record in `output`
    differs from the one to copy."""
    records = {name: record(os.path.join(runs, name), name, model_dir_as) for name in finished_runs(runs, only)}
    same = []
    for name, files in records.items():
        for file, text in files.items():
            path = os.path.join(output, name, file)
            if os.path.exists(path):
                with open(path) as f:
                    if f.read() != text:
                        raise ValueError(f"{path} exists and differs from the run's; move it away to export again")
        if all(os.path.exists(os.path.join(output, name, file)) for file in files):
            same.append(name)
    copied = [name for name in records if name not in same]
    for name in copied:
        os.makedirs(os.path.join(output, name), exist_ok=True)
        for file, text in records[name].items():
            with open(os.path.join(output, name, file), "w") as f:
                f.write(text)
    return copied, same


def main():
    if not FLAGS.study_runs or not os.path.isdir(FLAGS.study_runs):
        fail(f"--study_runs: {FLAGS.study_runs!r} is not a folder of runs")
    if not FLAGS.records:
        fail("--records: give the folder the records go to")
    if FLAGS.only:
        missing = [name for name in FLAGS.only if not os.path.isdir(os.path.join(FLAGS.study_runs, name))]
        if missing:
            fail(f"--only: {', '.join(missing)} not in {FLAGS.study_runs}")
    try:
        copied, same = export(FLAGS.study_runs, FLAGS.records, FLAGS.model_dir_as.rstrip("/"), FLAGS.only)
    except ValueError as err:
        fail(str(err))
    if not copied and not same:
        fail(f"--study_runs: no finished run in {FLAGS.study_runs} (finished: summary.json says complete)")
    for name in copied:
        print(f"exported {name}")
    for name in same:
        print(f"{name}: already in {FLAGS.records}, the same")


if __name__ == "__main__":
    run(main)
