"""apps.reproduce --study=batch_growth: fixed batches against a batch grown
by the noise scale, its plan and (slow) a tiny study on the sample."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def reproduce(*args, timeout=300):
    result = subprocess.run(
        [sys.executable, "-m", "apps.reproduce", "--study=batch_growth", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_plan_compares_fixed_batches_with_a_grown_one(tmp_path):
    out = reproduce("--dry_run", f"--output_dir={tmp_path / 'study'}", "--lr_grid=0.5,1,2")
    lines = out.splitlines()
    assert lines[0].startswith("study batch_growth (resnet20 on cifar10): 6 cells x 3 rates = 18 runs")
    runs = [line.split()[0] for line in lines if line.endswith(" to run")]
    assert runs[:3] == ["msgd_b128_lr0.05", "msgd_b128_lr0.1", "msgd_b128_lr0.2"]
    assert "sngm_b4096_lr1.6" in runs and "sngm_b128to4096_lr3.2" in runs and len(runs) == 18
    assert not os.path.exists(tmp_path / "study")  # a dry run writes nothing


@pytest.mark.slow
def test_a_tiny_study_grows_its_batch_and_reports_it(tmp_path):
    """SNGM on the sample's two-conv network, 2 epochs, one rate: B = 128,
    512, and 128 grown to at most 512."""
    study = tmp_path / "study"
    reproduce(
        "--dataset=sample",
        "--models=twoconv",
        "--methods=sngm",
        "--batch_sizes=128,512",
        "--epochs=2",
        "--lr_grid=0.125",
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
    assert summary["epoch_batch_sizes"][0] == 128 and len(summary["epoch_batch_sizes"]) == 2
    results = (study / "results.md").read_text()
    # One rate a cell: each chosen on its grid's edge.
    assert "| SNGM | 128 grown to <= 512 | 0.2 (edge of grid) |" in results
    assert "| SNGM | 512 | 0.2 (edge of grid) |" in results and "| sngm_b128to512_lr0.2 | yes |" in results
    assert (study / "batch_growth.png").exists()
