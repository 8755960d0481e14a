"""apps.reproduce: the plan of each study, a whole (tiny) study, resume, bad input."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from sngm_keras.studies import folder, table_report, tables
from sngm_keras.training import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reproduce(*args):
    return subprocess.run(
        [sys.executable, "-m", "apps.reproduce", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )


def test_plans(tmp_path):
    table2 = tables.plan("table2", str(tmp_path))
    assert len(table2) == 12
    sngm = next(r for r in table2 if r.run_id == "resnet56_sngm_b4096")
    assert (sngm.config.learning_rate, sngm.config.batch_size, sngm.config.epochs) == (1.3, 4096, 160)
    assert sngm.config.model_dir == os.path.join(str(tmp_path), "runs", "resnet56_sngm_b4096")
    quick = tables.plan("table2", str(tmp_path), epochs_scale=0.05, lr_grid=[0.5, 2])
    assert len(quick) == 22  # 10 rows swept, the two pytorch-lars rows once each
    msgd = next(r for r in quick if r.run_id == "resnet20_msgd_b128_lr0.2")
    assert (msgd.config.epochs, msgd.config.decay_epochs) == (8, (4, 6))
    warm = next(r for r in quick if r.run_id.startswith("resnet20_lars_warmup") and r.config.learning_rate == 1.2)
    assert warm.config.warmup_epochs == 0 or warm.config.warmup_epochs < warm.config.epochs
    assert len(tables.plan("table3", str(tmp_path))) == 4
    with pytest.raises(ConfigError, match="--study"):
        tables.plan("table4", str(tmp_path))
    with pytest.raises(ConfigError, match="--lr_grid"):
        tables.plan("table2", str(tmp_path), lr_grid=[1.0, -2.0])
    with pytest.raises(ConfigError, match="--epochs_scale"):
        tables.plan("table2", str(tmp_path), epochs_scale=0)


def _finish(run, validation_accuracy):
    os.makedirs(run.config.model_dir, exist_ok=True)
    with open(os.path.join(run.config.model_dir, "summary.json"), "w") as f:
        summary = {"validation_accuracy": validation_accuracy, "test_accuracy": 0.5, "best_test_accuracy": 0.5}
        json.dump({"complete": True, **summary, "updates": 10, "wall_seconds": 60.0}, f)


def test_models_grid_rows_and_the_pytorch_lars_row_at_the_selected_rate(tmp_path):
    runs = tables.plan(
        "table2",
        str(tmp_path),
        epochs_scale=0.125,
        lr_grid=[0.5, 1, 2],
        models=["resnet20"],
        grid_rows=["msgd_b4096", "lars_b4096", "sngm_b4096"],
    )
    assert {r.group for r in runs} == {"resnet20"}
    assert sorted(r.run_id for r in runs if r.row in ("msgd_b128", "lars_warmup_b4096", "lars_pytorch_b4096")) == [
        "resnet20_lars_pytorch_b4096",
        "resnet20_lars_warmup_b4096",
        "resnet20_msgd_b128",
    ]
    assert len(runs) == 3 * 3 + 3
    assert all(r.config.epochs == 20 and r.config.decay_epochs == (10, 15) for r in runs if r.row == "msgd_b128")
    lars = [r for r in runs if r.row == "lars_b4096"]
    assert [r.config.learning_rate for r in lars] == [0.4, 0.8, 1.6] and not any(r.config.pytorch_lars for r in lars)
    at = [r.row for r in runs].index("lars_pytorch_b4096")
    assert tables.resolve_rates(runs)[at] is None  # the LARS grid has not finished
    for run, accuracy in zip(lars, [0.5, 0.7, 0.6]):
        _finish(run, accuracy)
    pytorch = next(r for r in tables.resolve_rates(runs) if r and r.row == "lars_pytorch_b4096")
    assert pytorch.config.learning_rate == 0.8 and pytorch.config.pytorch_lars
    assert pytorch.run_id == "resnet20_lars_pytorch_b4096_lr0.8" and pytorch.config.model_dir.endswith(pytorch.run_id)
    with pytest.raises(ConfigError, match="--models"):
        tables.plan("table2", str(tmp_path), models=["resnet50"])
    with pytest.raises(ConfigError, match="--lr_grid_rows"):
        tables.plan("table2", str(tmp_path), grid_rows=["sngm_b8192"])


def test_rows_keep_the_named_rows_of_each_model(tmp_path):
    runs = tables.plan(
        "table2",
        str(tmp_path),
        epochs_scale=0.25,
        lr_grid=[0.5, 1],
        rows=["msgd_b4096", "sngm_b4096"],
        grid_rows=["sngm_b4096"],
    )
    assert sorted(r.run_id for r in runs) == [
        "resnet20_msgd_b4096",
        "resnet20_sngm_b4096_lr0.8",
        "resnet20_sngm_b4096_lr1.6",
        "resnet56_msgd_b4096",
        "resnet56_sngm_b4096_lr0.65",
        "resnet56_sngm_b4096_lr1.3",
    ]
    assert all(r.config.epochs == 40 for r in runs)
    assert [r.run_id for r in tables.plan("table2", str(tmp_path), models=["resnet20"], rows=["msgd_b128"])] == [
        "resnet20_msgd_b128"
    ]
    pytorch = tables.plan("table2", str(tmp_path), models=["resnet20"], rows=["lars_b4096", "lars_pytorch_b4096"])
    assert [(r.row, r.rate_from) for r in pytorch] == [("lars_b4096", None), ("lars_pytorch_b4096", "lars_b4096")]
    with pytest.raises(ConfigError, match="--rows: study table2 has no row 'sngm_b8192'"):
        tables.plan("table2", str(tmp_path), rows=["sngm_b8192"])
    with pytest.raises(ConfigError, match="--rows: lars_pytorch_b4096 trains at the rate selected for lars_b4096"):
        tables.plan("table2", str(tmp_path), rows=["lars_pytorch_b4096"])
    with pytest.raises(ConfigError, match="--lr_grid_rows: study table2 has no row 'lars_b128'"):
        tables.plan("table2", str(tmp_path), grid_rows=["lars_b128"])
    with pytest.raises(ConfigError, match="--lr_grid_rows: sngm_b4096 is not one of --rows"):
        tables.plan("table2", str(tmp_path), rows=["msgd_b128"], grid_rows=["sngm_b4096"])
    for name in ("models", "rows"):
        with pytest.raises(ConfigError, match=f"--{name}: name at least one"):
            tables.plan("table2", str(tmp_path), **{name: []})


def test_the_pytorch_lars_row_named_in_the_grid_rows_is_swept_over_its_own_rate(tmp_path):
    row = ["lars_pytorch_b4096"]
    runs = tables.plan("table2", str(tmp_path), 0.125, [0.5, 1, 2], models=["resnet20"], rows=row, grid_rows=row)
    assert [(r.run_id, r.rate_from, r.lr_factor, r.config.pytorch_lars) for r in runs] == [
        (f"resnet20_lars_pytorch_b4096_lr{rate}", None, factor, True)
        for rate, factor in ((0.4, 0.5), (0.8, 1), (1.6, 2))
    ]
    for run, accuracy in zip(runs, (0.5, 0.6, 0.7)):
        _finish(run, accuracy)
    # The rate beyond its largest is named as the run at LARS's selected rate 3.2 was: that record counts.
    added = [r for r in tables.extend_grids(runs, 1) if r not in runs]
    assert [(r.run_id, r.config.learning_rate) for r in added] == [("resnet20_lars_pytorch_b4096_lr3.2", 3.2)]
    assert added[0].config.model_dir == os.path.join(str(tmp_path), "runs", "resnet20_lars_pytorch_b4096_lr3.2")


def _finish_with_history(run, validation_accuracy, train_loss):
    _finish(run, validation_accuracy)
    with open(os.path.join(run.config.model_dir, "history.csv"), "w") as f:
        f.write(f"epoch,grad_per_n,train_loss\n1,1.0,{train_loss}\n")


def test_every_row_trains_at_the_papers_rate_before_the_grids_other_factors(tmp_path):
    rows = ["msgd_b4096", "lars_b4096", "sngm_b4096"]
    runs = tables.plan("table2", str(tmp_path), 0.125, [0.5, 1, 2], models=["resnet20"], grid_rows=rows)
    order = [r.run_id.removeprefix("resnet20_") for r in tables.training_order(runs)]
    assert order == [
        "msgd_b128",
        "msgd_b4096_lr0.4",  # the paper's rates: MSGD 0.4, LARS 0.8 and SNGM 1.6 at B = 4096
        "lars_b4096_lr0.8",
        "lars_warmup_b4096",
        "sngm_b4096_lr1.6",
        "msgd_b4096_lr0.2",
        "msgd_b4096_lr0.8",
        "lars_b4096_lr0.4",
        "lars_b4096_lr1.6",
        "sngm_b4096_lr0.8",
        "sngm_b4096_lr3.2",
        "lars_pytorch_b4096",  # at the rate selected for LARS: after the runs it is selected from
    ]
    # A grid without the factor 1 starts from the factors nearest it.
    runs = tables.plan("table2", str(tmp_path), 0.125, [0.25, 0.5, 4], models=["resnet20"], grid_rows=["sngm_b4096"])
    sngm = [r.lr_factor for r in tables.training_order(runs) if r.row == "sngm_b4096"]
    assert sngm == [0.5, 0.25, 4]


def test_each_table_row_is_its_own_curve_even_at_the_same_optimizer_batch_and_rate(tmp_path):
    runs = tables.plan(
        "table2", str(tmp_path), epochs_scale=0.125, lr_grid=[1], models=["resnet20"], grid_rows=["lars_b4096"]
    )
    lars = next(r for r in runs if r.row == "lars_b4096")
    _finish_with_history(lars, 0.7, 2.5)
    runs = tables.resolve_rates(runs)
    pytorch = next(r for r in runs if r and r.row == "lars_pytorch_b4096")
    assert pytorch.config.learning_rate == lars.config.learning_rate == 0.8
    _finish_with_history(pytorch, 0.6, 1.5)
    warm = next(r for r in runs if r and r.row == "lars_warmup_b4096")
    _finish_with_history(warm, 0.65, 2.0)
    # Another row with the very same settings: only its name tells it apart.
    twin = dataclasses.replace(
        lars, run_id="twin", row="lars_twin", config=dataclasses.replace(lars.config, model_dir=str(tmp_path / "twin"))
    )
    _finish_with_history(twin, 0.5, 3.5)
    curves = table_report.curve_groups([r for r in runs if r] + [twin])["resnet20 on cifar10"]
    assert {label: rows[0]["train_loss"] for label, rows in curves.items()} == {
        "LARS, B=4096, lr=0.8": "2.5",
        "LARS (pytorch-lars), B=4096, lr=0.8": "1.5",
        f"LARS, warm-up, B=4096, lr={warm.config.learning_rate:g}": "2.0",
        "LARS, B=4096, lr=0.8 [lars_twin]": "3.5",
    }


def test_the_table_puts_the_papers_accuracy_beside_each_row(tmp_path):
    runs = tables.plan(
        "table2", str(tmp_path), epochs_scale=0.125, lr_grid=[1, 2], models=["resnet20"], grid_rows=["sngm_b4096"]
    )
    for run in runs:
        if run.rate_from is None:
            _finish_with_history(run, 0.7 if run.config.learning_rate == 3.2 else 0.6, 1.0)
    pytorch = next(r for r in tables.resolve_rates(runs) if r.row == "lars_pytorch_b4096")
    _finish_with_history(pytorch, 0.6, 1.0)
    text = table_report.results_markdown("table2", tables.resolve_rates(runs), {})
    best = text.split("## Every run")[0]
    paper = {
        line.split(" | ")[1] + " " + line.split(" | ")[3]: line.split(" | ")[9]
        for line in best.splitlines()
        if line.startswith("| resnet20 |")
    }
    assert paper == {
        "MSGD 0.1": "91.63%",
        "MSGD 0.4": "89.25%",
        "LARS (biases, BN excluded) 0.8": "90.66%",
        "LARS (biases, BN excluded) 2.4": "90.80%",
        "LARS (pytorch-lars: all variables) 0.8": "90.66%",
        "SNGM 3.2": "91.42%",  # selected on validation from 1.6 and 3.2
    }
    assert "| paper's test accuracy | updates |" in text
    assert "- runs finished: 7 of 7; their wall time: 0.12 h" in text  # 60 s each
    assert "paper's" not in table_report.results_markdown("figure1_cpu", [], {})
    assert "Grids not finished" not in text
    # Only SNGM was swept, and its best rate is the grid's largest.
    assert (
        "Chosen at an edge of the grid, so a rate beyond it might do better: "
        "resnet20 sngm_b4096 (3.2, the largest of 1.6, 3.2)\n" in text
    )


def test_a_report_before_the_end_names_the_unfinished_grids_and_the_waiting_runs(tmp_path):
    rows = ["msgd_b4096", "lars_b4096", "sngm_b4096"]
    runs = tables.plan("table2", str(tmp_path), 0.125, [0.5, 1, 2], models=["resnet20"], grid_rows=rows)
    for run_id in ("resnet20_msgd_b128", "resnet20_msgd_b4096_lr0.4", "resnet20_sngm_b4096_lr1.6"):
        _finish_with_history(next(r for r in runs if r.run_id == run_id), 0.6, 1.0)
    resolved = tables.resolve_rates(runs)
    waiting = sum(r is None for r in resolved)
    assert waiting == 1  # the pytorch-lars row waits for the LARS grid
    text = table_report.results_markdown("table2", [r for r in resolved if r is not None], {}, waiting)
    assert "- runs finished: 3 of 12 (1 waits for a rate selected on another row);" in text
    assert (
        "Grids not finished (each rate above chosen among its finished runs only): "
        "resnet20 msgd_b4096 (1 of 3 rates), resnet20 sngm_b4096 (1 of 3 rates)\n" in text
    )
    assert "Chosen at an edge" not in text  # each chosen rate the middle of its grid
    _finish_with_history(next(r for r in runs if r.run_id == "resnet20_msgd_b4096_lr0.2"), 0.65, 1.0)
    text = table_report.results_markdown("table2", [r for r in resolved if r is not None], {}, waiting)
    edge = "a rate beyond it might do better: resnet20 msgd_b4096 (0.2, the smallest of 0.2, 0.4, 0.8)"
    assert edge + "\n" in text


def test_a_grid_chosen_at_its_edge_is_extended_beyond_it(tmp_path):
    rows = ["msgd_b4096", "lars_b4096", "sngm_b4096"]
    runs = tables.plan(
        "table2",
        str(tmp_path),
        0.125,
        [0.5, 1, 2],
        models=["resnet20"],
        rows=[*rows, "lars_pytorch_b4096"],
        grid_rows=rows,
    )
    by_id = {r.run_id: r for r in runs}
    for run_id, accuracy in (
        ("resnet20_sngm_b4096_lr0.8", 0.7),  # the smallest rate wins
        ("resnet20_sngm_b4096_lr1.6", 0.6),
        ("resnet20_msgd_b4096_lr0.2", 0.5),  # the middle one wins
        ("resnet20_msgd_b4096_lr0.4", 0.6),
        ("resnet20_msgd_b4096_lr0.8", 0.4),
        ("resnet20_lars_b4096_lr0.4", 0.5),  # the largest wins
        ("resnet20_lars_b4096_lr0.8", 0.6),
        ("resnet20_lars_b4096_lr1.6", 0.7),
    ):
        _finish(by_id[run_id], accuracy)
    # SNGM's grid has not finished: only LARS's (chosen at its largest rate) is extended.
    assert [r.run_id for r in tables.extend_grids(runs, 2) if r not in runs] == ["resnet20_lars_b4096_lr3.2"]
    _finish(by_id["resnet20_sngm_b4096_lr3.2"], 0.5)
    assert tables.extend_grids(runs, 0) == runs
    extended = tables.extend_grids(runs, 2)
    added = {r.run_id: r for r in extended if r not in runs}
    assert sorted(added) == ["resnet20_lars_b4096_lr3.2", "resnet20_sngm_b4096_lr0.4"]
    sngm = added["resnet20_sngm_b4096_lr0.4"]
    assert (sngm.lr_factor, sngm.config.learning_rate, sngm.extends_grid) == (0.25, 0.4, True)
    assert sngm.config.model_dir == os.path.join(str(tmp_path), "runs", "resnet20_sngm_b4096_lr0.4")
    assert (added["resnet20_lars_b4096_lr3.2"].lr_factor, added["resnet20_lars_b4096_lr3.2"].config.learning_rate) == (
        4,
        3.2,
    )
    # Each extension beside its row; the pytorch-lars row waits for LARS's.
    assert [r.run_id for r in extended if r.row == "lars_b4096"][-1] == "resnet20_lars_b4096_lr3.2"
    assert extended.index(sngm) == len(extended) - 1
    assert tables.resolve_rates(extended)[extended.index(by_id["resnet20_lars_pytorch_b4096"])] is None
    # A finished extension that wins again calls for the next one, up to max_extensions per row.
    _finish(sngm, 0.8)
    _finish(added["resnet20_lars_b4096_lr3.2"], 0.65)  # below 1.6: LARS's grid is settled at 1.6
    assert [r.run_id for r in tables.extend_grids(runs, 1) if r not in runs] == list(added)
    twice = [r for r in tables.extend_grids(runs, 3) if r not in runs]
    assert [(r.run_id, r.lr_factor) for r in twice][-1] == ("resnet20_sngm_b4096_lr0.2", 0.125)
    pytorch = next(r for r in tables.resolve_rates(tables.extend_grids(runs, 1)) if r and r.rate_from)
    assert pytorch.config.learning_rate == 1.6
    resolved = tables.resolve_rates(tables.extend_grids(runs, 1))
    text = table_report.results_markdown("table2", [r for r in resolved if r], {}, resolved.count(None))
    assert "- runs finished: 11 of 12;" in text  # 3 + 3 + 3 rates, 2 extensions; pytorch-lars at 1.6 left
    assert "resnet20 sngm_b4096 (0.4, the smallest of 0.4, 0.8, 1.6, 3.2)" in text
    assert "resnet20 lars_b4096" not in text.split("Chosen at an edge")[1].split("\n")[0]


def test_grid_extensions_follow_the_reports_choice_and_plans_rates(tmp_path):
    def row(grid, accuracies, folder):
        runs = tables.plan("table2", str(tmp_path / folder), 0.125, grid, models=["resnet20"], rows=["msgd_b4096"])
        for run, accuracy in zip(runs, accuracies):
            _finish(run, accuracy)
        return runs

    # A repeated factor is one rate: of 0.5 and 1, 1 wins, and the next rate beyond it is 2.
    repeated = row([0.5, 1, 1], [0.5, 0.6, 0.6], "repeated")
    added = [r for r in tables.extend_grids(repeated, 3) if r not in repeated]
    assert [(r.lr_factor, r.config.learning_rate) for r in added] == [(2.0, 0.8)]
    # A tie goes to the rate listed first in the grid, as the report chooses: 1 (inside), no extension.
    tie = row([1, 0.5, 2], [0.6, 0.6, 0.5], "tie")
    assert tables.extend_grids(tie, 3) == tie
    assert tables.collect(tie)[0][0]["run"].lr_factor == 1
    # A decade grid: the rate is what plan gives for the factor a user would type (0.01 x 0.4).
    decade = row([0.1, 1, 10], [0.7, 0.6, 0.5], "decade")
    (ext,) = [r for r in tables.extend_grids(decade, 1) if r not in decade]
    widened = tables.plan("table2", str(tmp_path / "decade"), 0.125, [0.01, 0.1, 1, 10], models=["resnet20"])
    twin = next(r for r in widened if r.row == "msgd_b4096" and r.lr_factor == 0.01)
    assert (ext.lr_factor, ext.run_id, ext.config) == (0.01, twin.run_id, twin.config)


def test_the_study_folder_remembers_max_extensions(tmp_path):
    assert folder.recorded_max_extensions(str(tmp_path)) == 0
    folder.claim_output(str(tmp_path), "table2", 0.125, [0.5, 1, 2], 1)
    folder.claim_output(str(tmp_path), "table2", 0.125, [0.5, 1, 2])  # not given: kept
    assert folder.recorded_max_extensions(str(tmp_path)) == 1
    recorded = json.load(open(tmp_path / "study.json"))
    assert recorded == {"study": "table2", "epochs_scale": 0.125, "lr_grids": [[0.5, 1, 2]], "max_extensions": 1}


def test_dry_run_lists_the_grid_extensions_the_finished_runs_call_for(tmp_path):
    runs = tables.plan(
        "table2",
        str(tmp_path),
        0.125,
        [0.5, 1],
        overrides={"validation_size": 5000},
        models=["resnet20"],
        rows=["sngm_b4096"],
    )
    folder.claim_output(str(tmp_path), "table2", 0.125, [0.5, 1])
    for run, accuracy in zip(runs, (0.7, 0.6)):
        _finish_recorded(run, accuracy)
    args = ["--study=table2", "--models=resnet20", "--rows=sngm_b4096", "--epochs_scale=0.125", "--lr_grid=0.5,1"]
    result = reproduce(*args, f"--output_dir={tmp_path}", "--dry_run", "--max_extensions=1")
    assert result.returncode == 0, result.stderr[-2000:]
    listed = [
        (line.split()[0], line.split(" epochs=")[1].split()[1:])
        for line in result.stdout.splitlines()
        if line.startswith("  resnet20_")
    ]
    assert listed == [
        ("resnet20_sngm_b4096_lr0.8", ["finished"]),
        ("resnet20_sngm_b4096_lr1.6", ["finished"]),
        ("resnet20_sngm_b4096_lr0.4", ["to", "run", "(extension)"]),
    ]
    assert "plus up to" not in result.stdout  # the row's one extension is planned already
    plain = reproduce(*args, f"--output_dir={tmp_path}", "--dry_run")
    assert "study table2: 2 runs into" in plain.stdout and "extension" not in plain.stdout
    exported = reproduce(*args, f"--output_dir={tmp_path}", "--export_commands", "--max_extensions=2")
    assert _commands(exported) == [f"python -m apps.train --flagfile={tmp_path}/runs/resnet20_sngm_b4096_lr0.4.flags"]
    assert "rerun with --export_commands for the grid extensions they may call for;" in exported.stderr
    # Recorded by the export: a dry run without the flag plans the extension and counts the one more it may need.
    again = reproduce(*args, f"--output_dir={tmp_path}", "--dry_run")
    assert "to run (extension)" in again.stdout and "plus up to 1 grid extension as the grids finish" in again.stdout


def test_dry_run_estimates_the_time_left_from_the_speed_of_finished_runs(tmp_path):
    args = ["--study=table2", "--models=resnet20", "--epochs_scale=0.125", f"--output_dir={tmp_path}", "--dry_run"]
    overrides = {"validation_size": 5000}  # as the app plans table2
    runs = tables.plan("table2", str(tmp_path), epochs_scale=0.125, overrides=overrides, models=["resnet20"])
    none = reproduce(*args)
    assert none.returncode == 0, none.stderr[-2000:]
    assert "estimate for resnet20: none (no finished run to measure its speed from)" in none.stdout
    folder.claim_output(str(tmp_path), "table2", 0.125, None)
    for row, speed in (("msgd_b128", 250.0), ("lars_b4096", 350.0)):
        run = next(r for r in runs if r.row == row)
        _finish(run, 0.6)
        summary_path = os.path.join(run.config.model_dir, "summary.json")
        summary = json.load(open(summary_path))
        json.dump({**summary, "examples_per_second": speed}, open(summary_path, "w"))
        json.dump(run.config.result_fields(), open(os.path.join(run.config.model_dir, "config.json"), "w"))
    result = reproduce(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    # 4 runs left (the pytorch-lars row at the rate chosen for LARS), each 20 epochs of 45,000 training images
    # and evaluations of 5,000 + 10,000 images at a third of the cost: 4 * 20 * 50,000 images at 350/s.
    assert f"estimate for resnet20: {4 * 20 * 50_000 / 350 / 3600:.1f} h for the 4 runs left at 350" in result.stdout
    rows = reproduce(*args, "--rows=msgd_b128,sngm_b4096")
    assert rows.returncode == 0, rows.stderr[-2000:]
    listed = [line.split()[0] for line in rows.stdout.splitlines() if line.startswith("  resnet20_")]
    assert listed == ["resnet20_msgd_b128", "resnet20_sngm_b4096"]
    assert "study table2: 2 runs into" in rows.stdout
    one = reproduce(*args, "--rows=sngm_b4096")
    assert one.returncode == 0 and "study table2: 1 run into" in one.stdout, one.stdout
    # the speed of the finished runs among the rows (msgd_b128's 250), the one run left
    assert f"estimate for resnet20: {20 * 50_000 / 250 / 3600:.1f} h for the run left at 250" in rows.stdout


@pytest.mark.slow
def test_tiny_study_writes_table_and_curves_and_resumes(tmp_path):
    out = str(tmp_path / "study")
    args = [
        "--study=figure1_cpu",
        "--dataset=sample",
        "--epochs_scale=0.1",
        "--max_updates=2",
        "--verbose=0",
        f"--output_dir={out}",
    ]
    first = reproduce(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("\n== ") == 4
    results = open(os.path.join(out, "results.md")).read()
    for method in (
        "| MSGD | - | 0.025 | 1.1 | 128 |",
        "| MSGD | - | 0.1 | 1.1 | 4096 |",
        "| LARS (biases, BN excluded) | No | 4 |",
        "| SNGM | - | 0.8 | 1.1 | 4096 |",
    ):
        assert method in results, results
    assert "runs finished: 4 of 4" in results
    assert os.path.getsize(os.path.join(out, "curves.png")) > 10_000

    again = reproduce(*args)  # every run finished: nothing is trained again
    assert again.returncode == 0 and "\n== " not in again.stdout
    assert again.stdout.count(" finished") == 4

    other = reproduce("--study=table2", "--epochs_scale=0.1", f"--output_dir={out}")
    assert other.returncode == 2
    assert other.stderr.strip().splitlines()[-1].startswith("error: --output_dir:")
    rescaled = reproduce(*[a for a in args if not a.startswith("--epochs_scale")], "--epochs_scale=0.2")
    assert rescaled.returncode == 2 and "epochs_scale=0.1" in rescaled.stderr


@pytest.mark.slow
def test_a_study_trains_the_extension_its_grid_calls_for(tmp_path):
    out = str(tmp_path / "study")
    args = ["--study=figure1_cpu", "--dataset=sample", "--rows=sngm_b4096", "--lr_grid=1,2", "--max_updates=2"]
    result = reproduce(*args, "--max_extensions=1", "--verbose=0", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    # Of two rates the chosen one is on an edge: one more beyond it, then no more.
    trained = [line[3:] for line in result.stdout.splitlines() if line.startswith("== ")]
    assert trained[:2] == ["twoconv_sngm_b4096_lr0.8", "twoconv_sngm_b4096_lr1.6"]
    assert trained[2:] in (["twoconv_sngm_b4096_lr0.4"], ["twoconv_sngm_b4096_lr3.2"])
    results = open(os.path.join(out, "results.md")).read()
    assert "runs finished: 3 of 3" in results and "- max_extensions: 1" in results


# Other mistakes: tests/test_bad_input.py.
@pytest.mark.parametrize("args, flag", [([], "--study")])
def test_bad_input(tmp_path, args, flag):
    result = reproduce(*args, f"--output_dir={tmp_path / 'out'}", "--dry_run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {flag}")


def _finish_recorded(run, validation_accuracy):
    _finish(run, validation_accuracy)
    with open(os.path.join(run.config.model_dir, "config.json"), "w") as f:
        json.dump(run.config.result_fields(), f)


def _commands(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def test_export_commands_lists_the_runs_that_can_start_and_then_those_that_waited(tmp_path):
    from sngm_keras.training.flagfile import flagfile_text

    out = str(tmp_path / "study")
    args = [
        "--study=table2",
        "--models=resnet20",
        "--dataset=sample",
        "--validation_size=500",
        "--epochs_scale=0.125",
        "--lr_grid=0.5,1,1",  # a repeated factor: its run is listed once
        "--lr_grid_rows=lars_b4096",
        f"--output_dir={os.path.relpath(out, ROOT)}",  # relative to the folder reproduce runs in
        "--export_commands",
    ]
    runs = tables.plan(
        "table2",
        out,
        epochs_scale=0.125,
        lr_grid=[0.5, 1],
        overrides={"dataset": "sample", "validation_size": 500},
        models=["resnet20"],
        grid_rows=["lars_b4096"],
    )
    first = reproduce(*args)
    lines = _commands(first)
    ready = [r for r in tables.training_order(runs) if r.rate_from is None]
    assert len(ready) == 6  # msgd_b128, msgd_b4096, two LARS rates, LARS warm-up, SNGM; pytorch-lars waits
    # Absolute paths, in the commands and in the flagfiles: they run from any folder.
    assert lines == [f"python -m apps.train --flagfile={out}/runs/{r.run_id}.flags" for r in ready]
    for run in ready:
        with open(os.path.join(out, "runs", f"{run.run_id}.flags")) as f:
            assert f.read() == flagfile_text(run.config)
    assert (
        "6 runs ready" in first.stderr
        and "rerun with --export_commands for the run that takes a selected rate;" in first.stderr
        and "started" not in first.stderr
    )
    assert os.path.exists(os.path.join(out, "study.json")) and not any(os.path.isdir(r.config.model_dir) for r in ready)

    lars = [r for r in runs if r.row == "lars_b4096"]
    for run, accuracy in zip(lars, [0.6, 0.5]):  # the smaller rate wins
        _finish_recorded(run, accuracy)
    interrupted = ready[0].config.model_dir  # stopped after an epoch: listed, to resume, with a warning
    os.makedirs(os.path.join(interrupted, "checkpoints"))
    open(os.path.join(interrupted, "checkpoints", "state.json"), "w").close()
    with open(os.path.join(interrupted, "config.json"), "w") as f:
        json.dump(ready[0].config.result_fields(), f)
    second = reproduce(*args)
    lines = _commands(second)
    assert "1 of them started before and resume: make sure no process still trains it" in second.stderr
    assert len(lines) == 5 and lines[-1].endswith(
        f"runs/resnet20_lars_pytorch_b4096_lr{lars[0].config.learning_rate:g}.flags"
    )

    for run in tables.resolve_rates(runs):
        if not tables.is_finished(run):
            _finish_recorded(run, 0.5)
    done = reproduce(*args)
    assert _commands(done) == [] and "no run left to train" in done.stderr

    refused = reproduce(*args, "--dry_run")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith("error: --export_commands")
