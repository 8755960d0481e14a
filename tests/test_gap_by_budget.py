"""tools/gap_by_budget.py: the gap table from run records, and its bad input."""

import json
import os
import subprocess
import sys

import pytest

from tools import gap_by_budget

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(folder, name, optimizer, batch_size, epochs, test, validation, complete=True):
    run_dir = os.path.join(folder, name)
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({"optimizer": optimizer, "batch_size": batch_size, "epochs": epochs}, f)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump({"complete": complete, "test_accuracy": test, "validation_accuracy": validation}, f)


def test_the_table_takes_sngm_at_its_validation_best_and_leaves_other_runs_out(tmp_path):
    runs = str(tmp_path)
    write_run(runs, "msgd20", "msgd", 128, 20, 0.8342, 0.8370)
    write_run(runs, "sngm20_a", "sngm", 4096, 20, 0.7436, 0.7470)
    write_run(runs, "sngm20_b", "sngm", 4096, 20, 0.7459, 0.7438)  # higher test, lower validation: not chosen
    write_run(runs, "msgd20_b4096", "msgd", 4096, 20, 0.6225, 0.6252)  # not a row of the gap
    write_run(runs, "msgd40", "msgd", 128, 40, 0.8561, 0.8614)
    write_run(runs, "sngm40_unfinished", "sngm", 4096, 40, 0.9, 0.9, complete=False)
    table = gap_by_budget.by_budget(gap_by_budget.read_records([runs]))
    assert sorted(table) == [20, 40]
    assert gap_by_budget.gap(table[20], "test_accuracy") == pytest.approx(9.06)
    assert gap_by_budget.gap(table[20], "validation_accuracy") == pytest.approx(9.00)
    assert gap_by_budget.gap(table[40], "test_accuracy") is None
    assert gap_by_budget.markdown(table).splitlines()[2:] == [
        "| 20 | 83.42% (83.70%) | 74.36% (74.70%) | 9.06 (9.00) |",
        "| 40 | 85.61% (86.14%) | no finished run |  |",
    ]


def test_two_msgd_runs_at_one_budget_are_refused(tmp_path):
    write_run(str(tmp_path), "a", "msgd", 128, 20, 0.8, 0.8)
    write_run(str(tmp_path), "b", "msgd", 128, 20, 0.7, 0.7)
    with pytest.raises(ValueError, match="two MSGD runs at B = 128 and 20 epochs"):
        gap_by_budget.by_budget(gap_by_budget.read_records([str(tmp_path)]))


@pytest.mark.parametrize(
    "args, error",
    [
        ([], "error: --runs: name at least one folder of run records"),
        (["--runs={tmp}/none"], "error: --runs: no folder {tmp}/none"),
        (["--runs={tmp}"], "error: --runs: no budget holds both MSGD at B = 128 and SNGM at B = 4096"),
    ],
)
def test_bad_input_ends_in_one_line(tmp_path, args, error):
    write_run(str(tmp_path), "msgd20", "msgd", 128, 20, 0.8, 0.8)
    args = [a.format(tmp=tmp_path) for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "tools.gap_by_budget", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert (result.returncode, result.stderr.strip().splitlines()) == (2, [error.format(tmp=tmp_path)])
