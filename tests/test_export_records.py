"""tools/export_records.py: finished runs' records copied without the
machine's paths, published records never overwritten, and its bad input."""

import json
import os
import subprocess
import sys

import pytest

from tools import export_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(runs, name, complete=True, validation=True, dataset="cifar10", data_dir="data"):
    run_dir = runs / name
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "epoch-0001.weights.h5").write_bytes(b"weights")
    config = {"optimizer": "sngm", "batch_size": 4096, "dataset": dataset}
    (run_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    (run_dir / "history.csv").write_text("epoch,loss\n1,2.3\n")
    if validation:
        (run_dir / "validation.csv").write_text("epoch,validation_accuracy\n1,0.1\n")
    data_dir = data_dir and str(runs.parent / data_dir)
    flags = {"dataset": dataset, "data_dir": data_dir, "model_dir": str(run_dir), "epochs": 160}
    summary = {"complete": complete, "test_accuracy": 0.87, "flags": flags}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def test_finished_runs_are_copied_with_their_paths_replaced(tmp_path):
    runs, out = tmp_path / "study" / "runs", tmp_path / "docs"
    write_run(runs, "sngm_lr1.6")
    write_run(runs, "msgd", validation=False)
    write_run(runs, "sngm_lr0.8", complete=False)
    copied, same = export_records.export(str(runs), str(out), "runs/study")
    assert (copied, same) == (["msgd", "sngm_lr1.6"], [])
    assert sorted(os.listdir(out)) == ["msgd", "sngm_lr1.6"]
    assert sorted(os.listdir(out / "sngm_lr1.6")) == ["config.json", "history.csv", "summary.json", "validation.csv"]
    assert sorted(os.listdir(out / "msgd")) == ["config.json", "history.csv", "summary.json"]
    summary = json.loads((out / "sngm_lr1.6" / "summary.json").read_text())
    assert summary["flags"] == {
        "dataset": "cifar10",
        "data_dir": "DIR",
        "model_dir": "runs/study/sngm_lr1.6",
        "epochs": 160,
    }
    assert summary["test_accuracy"] == 0.87
    for file in ("config.json", "history.csv", "validation.csv"):
        assert (out / "sngm_lr1.6" / file).read_text() == (runs / "sngm_lr1.6" / file).read_text()
    assert str(tmp_path) not in "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    # Again: nothing to copy, nothing rewritten.
    assert export_records.export(str(runs), str(out), "runs/study") == ([], ["msgd", "sngm_lr1.6"])
    assert export_records.export(str(runs), str(out), "runs/study", only=["msgd"]) == ([], ["msgd"])


def test_a_folder_of_images_is_shown_as_dir_and_no_data_dir_stays_none(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "docs"
    write_run(runs, "folder", dataset=str(tmp_path / "images"), data_dir=None)
    export_records.export(str(runs), str(out), "runs")
    config = json.loads((out / "folder" / "config.json").read_text())
    flags = json.loads((out / "folder" / "summary.json").read_text())["flags"]
    assert (config["dataset"], flags["dataset"], flags["data_dir"]) == ("DIR", "DIR", None)
    assert str(tmp_path) not in "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    (runs / "folder" / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"runs/folder/summary.json is not JSON"):
        export_records.export(str(runs), str(out), "runs")


def test_a_published_record_that_differs_is_never_overwritten(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "docs"
    write_run(runs, "a")
    write_run(runs, "b")
    export_records.export(str(runs), str(out), "runs")
    (out / "b" / "history.csv").write_text("epoch,loss\n1,9.9\n")
    (out / "a").joinpath("history.csv").unlink()
    with pytest.raises(ValueError, match=r"docs/b/history.csv exists and differs from the run's"):
        export_records.export(str(runs), str(out), "runs")
    assert not (out / "a" / "history.csv").exists()  # nothing written before the refusal
    assert (out / "b" / "history.csv").read_text() == "epoch,loss\n1,9.9\n"


def test_bad_input_ends_in_one_line(tmp_path):
    write_run(tmp_path / "runs", "unfinished", complete=False)
    cases = [
        ([], "error: --study_runs: None is not a folder of runs"),
        (
            ["--study_runs={tmp}/none", "--records={tmp}/out"],
            "error: --study_runs: '{tmp}/none' is not a folder of runs",
        ),
        (["--study_runs={tmp}/runs"], "error: --records: give the folder the records go to"),
        (
            ["--study_runs={tmp}/runs", "--records={tmp}/out", "--only=x,unfinished"],
            "error: --only: x not in {tmp}/runs",
        ),
        (
            ["--study_runs={tmp}/runs", "--records={tmp}/out"],
            "error: --study_runs: no finished run in {tmp}/runs (finished: summary.json says complete)",
        ),
    ]
    stdin = "".join(json.dumps([a.format(tmp=tmp_path) for a in args]) + "\n" for args, _ in cases)
    results_path = tmp_path / "results.jsonl"
    subprocess.run(
        [sys.executable, "-m", "tests.app_driver", "tools.export_records", str(results_path)],
        input=stdin,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    results = [json.loads(line) for line in results_path.read_text().splitlines()]
    assert len(results) == len(cases)
    for (_, error), result in zip(cases, results):
        assert (result["code"], result["stderr"].strip().splitlines()) == (2, [error.format(tmp=tmp_path)])
    assert not (tmp_path / "out").exists()
