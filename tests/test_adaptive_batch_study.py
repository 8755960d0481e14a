"""apps.reproduce --study=adaptive_batch: the batch-scaling study's fixed
batches against a batch grown by the noise scale; its plan over the committed
batch-scaling records, its verdict, and (slow) a tiny study on the sample."""

import json
import os
import subprocess
import sys

import pytest

from sngm_keras.studies import adaptive_batch, adaptive_batch_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
FIXED_RUNS = os.path.join(ROOT, "docs", "batch_scaling", "runs")


def reproduce(*args, timeout=300):
    result = subprocess.run(
        [sys.executable, "-m", "apps.reproduce", "--study=adaptive_batch", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_plan_reuses_the_batch_scaling_runs_and_trains_only_the_grown_ones(tmp_path):
    out = reproduce("--dry_run", f"--output_dir={tmp_path / 'study'}", f"--fixed_runs_dir={FIXED_RUNS}")
    lines = out.splitlines()
    assert lines[0].startswith("study adaptive_batch (twoconv on cifar10): 10 cells x 4 rates = 40 runs")
    to_run = [line.split()[0] for line in lines if line.endswith(" to run")]
    assert to_run == [
        "msgd_b128to8192_lr0.00625",
        "msgd_b128to8192_lr0.0125",
        "msgd_b128to8192_lr0.025",
        "msgd_b128to8192_lr0.05",
        "sngm_b128to8192_lr0.05",
        "sngm_b128to8192_lr0.1",
        "sngm_b128to8192_lr0.2",
        "sngm_b128to8192_lr0.4",
    ]
    finished = [line.split()[0] for line in lines if " finished" in line]
    # Every committed MSGD and SNGM run of the batch-scaling study, none of LARS.
    committed = [n for n in os.listdir(FIXED_RUNS) if not n.startswith("lars")]
    assert sorted(finished) == sorted(committed) and len(finished) == 44
    assert lines[-1].startswith("estimate: 0.8 h for the 8 runs left at 1506 training images/s (measured)")
    assert not os.path.exists(tmp_path / "study")  # a dry run writes nothing


def _entry(method, batch_size, test_accuracy, updates, grown_to=None):
    return {
        "cell": adaptive_batch.Cell(method, batch_size, grown_to),
        "selected": {"summary": {"test_accuracy": test_accuracy, "updates": updates}},
    }


def test_the_verdict_compares_the_grown_batch_with_the_smallest_and_the_nearest_fixed_one(tmp_path):
    study = adaptive_batch.Study(str(tmp_path), methods=["sngm"], batch_sizes=[128, 512, 2048])
    table = [
        _entry("sngm", 128, 0.75, 3510),
        _entry("sngm", 512, 0.73, 880),
        _entry("sngm", 2048, 0.65, 220),
        _entry("sngm", 128, 0.742, 1000, grown_to=2048),
    ]
    (line,) = adaptive_batch_report.goal_lines(study, table)
    assert "grown 74.20% in 1000 updates against fixed B = 128's 75.00% in 3510: -0.80 points with 0.28" in line
    assert "goal (within 1 point with at most a third of the updates) met" in line
    assert "B = 512 (880 updates): 73.00%, +1.20 points for the grown batch" in line
    table[-1]["selected"]["summary"]["updates"] = 1200  # 0.34 of the updates: not met
    assert "not met" in adaptive_batch_report.goal_lines(study, table)[0]


@pytest.mark.slow
def test_a_tiny_study_grows_its_batch_and_reports_it(tmp_path):
    """SNGM on the sample's two-conv network, 2 epochs, one rate: B = 128,
    512, and 128 grown to at most 512."""
    study = tmp_path / "study"
    reproduce(
        "--dataset=sample",
        "--methods=sngm",
        "--batch_sizes=128,512",
        "--epochs=2",
        "--lr_grid=1.4142136",
        "--max_extensions=0",
        "--validation_size=500",
        "--verbose=0",
        f"--output_dir={study}",
        timeout=1200,
    )
    grown = study / "runs" / "sngm_b128to512_lr0.2"
    with open(grown / "summary.json") as f:
        summary = json.load(f)
    assert summary["flags"]["batch_growth"] == "noise_scale" and summary["flags"]["max_batch_size"] == 512
    assert summary["flags"]["micro_batch_size"] == 64
    assert summary["epoch_batch_sizes"][0] == 128 and len(summary["epoch_batch_sizes"]) == 2
    results = (study / "results.md").read_text()
    # One rate a cell: each chosen on its grid's edge.
    assert "| SNGM | 128 grown to <= 512 | " in results and "| 0.2 (edge of grid) |" in results
    assert "| sngm_b128to512_lr0.2 | yes |" in results
    assert "- SNGM: grown " in results and "against fixed B = 128's" in results
    assert (study / "adaptive_batch.png").exists()
