"""The batch-scaling study: steps-to-target, selection on validation, grid
extension, bad input, and a tiny study end to end with resume."""

import json
import os
import subprocess
import sys

import pytest

from sngm_keras.studies import batch_scaling as scaling
from sngm_keras.studies import batch_scaling_report as report
from sngm_keras.studies import folder
from sngm_keras.training import ConfigError
from sngm_keras.training.rundir import RunDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_steps_to_target_is_the_first_evaluation_at_or_above_it():
    rows = [
        {"updates": u, "validation_accuracy": a}
        for u, a in [(30, "0.41"), (10, "0.2"), (20, "0.6"), (40, "0.7"), (50, "0.55")]
    ]
    assert scaling.steps_to_target(rows, 0.6) == 20  # reached exactly, rows out of order
    assert scaling.steps_to_target(rows, 0.65) == 40
    assert scaling.steps_to_target(rows, 0.71) is None  # not reached
    assert scaling.steps_to_target([], 0.1) is None


def test_grid_centres_follow_the_scaling_rules():
    # MSGD linear from 0.0125 sqrt(2) at 128; SNGM and LARS as sqrt(B) from 0.2 and 2 at 4096.
    assert scaling.centre_rate("msgd", 128) == pytest.approx(0.0176777, rel=1e-5)
    assert scaling.centre_rate("msgd", 512) == pytest.approx(0.0707107, rel=1e-5)
    assert scaling.centre_rate("sngm", 2048) == pytest.approx(0.1414214, rel=1e-5)
    assert scaling.centre_rate("sngm", 8192) == pytest.approx(0.2828427, rel=1e-5)
    assert scaling.centre_rate("lars", 4096) == pytest.approx(2.0)
    study = scaling.Study("out")
    rates = [c.learning_rate for c in study.grid(scaling.Cell("sngm", 2048))]
    assert rates == pytest.approx([0.05, 0.1, 0.2, 0.4])  # symmetric about 0.2 * sqrt(2048 / 4096)
    msgd = [c.learning_rate for c in study.grid(scaling.Cell("msgd", 128))]
    assert msgd == pytest.approx([0.00625, 0.0125, 0.025, 0.05])
    config = study.grid(scaling.Cell("lars", 8192))[0]
    assert (config.micro_batch_size, config.epochs, config.validation_size, config.power) == (128, 10, 5000, 1.1)
    assert study.grid(scaling.Cell("lars", 128))[0].micro_batch_size is None
    assert len(study.cells) * len(study.lr_factors) == 48


def _finish(config, validation_accuracy, **summary):
    run_dir = RunDir(config.model_dir)
    os.makedirs(run_dir.path, exist_ok=True)
    with open(run_dir.summary, "w") as f:
        json.dump({"complete": True, "validation_accuracy": validation_accuracy, "test_accuracy": 0.5, **summary}, f)


def test_the_selected_runs_noise_scales_go_in_the_table_and_on_panel_b(tmp_path):
    study = scaling.Study(str(tmp_path), methods=["sngm"], batch_sizes=[128, 512, 2048], lr_factors=[1, 2])
    common = dict(best_validation_accuracy=0.6, updates=10, wall_seconds=60.0)
    small, medium, large = study.cells
    for config in study.grid(small):  # one micro-batch per step: not measured
        _finish(config, 0.5, gradient_noise_scale=None, **common)
    low, high = study.grid(medium)
    _finish(low, 0.4, gradient_noise_scale=300.0, **common)
    _finish(high, 0.6, gradient_noise_scale=41.6, **common)  # selected
    low, high = study.grid(large)
    _finish(low, 0.6, gradient_noise_scale=float("inf"), **common)  # selected: |G|^2 average not positive
    _finish(high, 0.5, gradient_noise_scale=90.0, **common)
    table = study.results()
    assert scaling.end_noise_scales(table) == [("sngm", 512, 41.6)]
    rows = {
        line.split(" | ")[1]: line
        for line in report.markdown(study, table, {}).split("## Every run")[0].splitlines()
        if line.startswith("| SNGM |")
    }
    assert rows["128"].endswith("| - |") and rows["512"].endswith("| 42 |") and rows["2048"].endswith("| - |")
    report.plot(study, table, str(tmp_path / "figure.png"))
    assert (tmp_path / "figure.png").stat().st_size > 10_000


def _reach_target_after(config, updates):
    """validation.csv of a run whose validation accuracy first reaches 0.6 after `updates` updates."""
    rows = [{"updates": updates - 1, "validation_accuracy": 0.59}, {"updates": updates, "validation_accuracy": 0.6}]
    RunDir(config.model_dir).write_validation(rows)


def test_steps_to_target_at_a_rate_on_the_grids_edge_is_marked(tmp_path):
    study = scaling.Study(
        str(tmp_path), methods=["sngm"], batch_sizes=[512, 2048], lr_factors=[0.5, 1, 2], max_extensions=0
    )
    common = dict(best_validation_accuracy=0.6, updates=40, wall_seconds=60.0)
    small, large = study.cells
    for config, accuracy, steps in zip(study.grid(small), [0.5, 0.7, 0.6], [30, 25, 20]):
        _finish(config, accuracy, **common)  # the middle rate is selected, the largest is fastest
        _reach_target_after(config, steps)
    for config, accuracy, steps in zip(study.grid(large), [0.5, 0.7, 0.6], [30, 15, 20]):
        _finish(config, accuracy, **common)  # the middle rate is selected and fastest
        _reach_target_after(config, steps)
    table = study.results()
    assert [report._on_edge(entry) for entry in table] == [True, False]  # hollow on panel (b), marked in the table
    report.plot(study, table, str(tmp_path / "figure.png"))
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    text = report.markdown(study, table, {})
    rows = {
        line.split(" | ")[1]: line.split(" | ")
        for line in text.split("## Every run")[0].splitlines()
        if line.startswith("| SNGM |")
    }
    small_rates = [c.learning_rate for c in study.grid(small)]
    large_rates = [c.learning_rate for c in study.grid(large)]
    assert rows["512"][3] == f"{small_rates[1]:g}" and rows["512"][6] == f"20 ({small_rates[2]:g}, edge of grid)"
    assert rows["2048"][3] == f"{large_rates[1]:g}" and rows["2048"][6] == f"15 ({large_rates[1]:g})"
    assert '"edge of grid" there marks a rate that is the smallest or largest of its grid' in text


def test_the_rates_fitted_exponent_and_the_scaling_efficiency_from_steps_to_target(tmp_path):
    study = scaling.Study(
        str(tmp_path), methods=["msgd", "sngm"], batch_sizes=[128, 512, 2048], lr_factors=[0.5, 1, 2], max_extensions=0
    )
    common = dict(best_validation_accuracy=0.6, updates=700, wall_seconds=60.0)
    picks = {128: 1, 512: 2, 2048: 0}  # the middle rate, the largest, the smallest
    steps = {128: [600, 400, 500], 512: [300, 200, 100], 2048: [50, 60, 70]}
    for cell in study.cells:
        if cell.method == "sngm" and cell.batch_size == 2048:
            continue  # not run yet
        for index, config in enumerate(study.grid(cell)):
            _finish(config, 0.7 if index == picks[cell.batch_size] else 0.6, **common)
            if cell.method == "msgd":
                _reach_target_after(config, steps[cell.batch_size][index])
            else:
                RunDir(config.model_dir).write_validation([{"updates": 700, "validation_accuracy": 0.59}])
    table = study.results()
    # Selected rates c, 8c, 8c at B = 128, 512, 2048 (c the rule's rate at 128): log2 points (0, 0), (2, 3), (4, 3).
    assert scaling.rate_exponent(table, "msgd") == pytest.approx(0.75, rel=1e-4)  # rates kept to 6 digits
    # SNGM: the middle rate at 128, the largest at 512 (twice the centre, which is twice 128's): log2 (0, 0), (2, 2).
    assert scaling.rate_exponent(table, "sngm") == pytest.approx(1.0, rel=1e-4)
    assert scaling.scaling_efficiency(table, "msgd") == pytest.approx({128: 1.0, 512: 1.0, 2048: 0.5})
    assert scaling.scaling_efficiency(table, "sngm") == {128: None, 512: None}
    text = report.markdown(study, table, {})
    assert (
        "- MSGD: k = 0.75 (grid centred on the linear rule, k = 1); still on its grid's edge at B = 512, 2048" in text
    )
    assert "| MSGD | 1.00 | 1.00 | 0.50 |" in text
    assert "| SNGM | not reached | not reached | - |" in text


def test_a_grid_whose_best_rate_is_on_its_edge_is_extended(tmp_path):
    study = scaling.Study(str(tmp_path), methods=["sngm"], batch_sizes=[512], max_extensions=2)
    cell = study.cells[0]
    grid = study.grid(cell)
    assert study.next_config() == grid[0]
    for config, accuracy in zip(grid, [0.3, 0.4, 0.5, 0.6]):  # best at the top edge
        _finish(config, accuracy)
    configs, on_edge = study.cell_configs(cell)
    assert [c.learning_rate for c in configs] == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.4])
    assert not on_edge
    assert study.next_config().learning_rate == pytest.approx(0.4)
    _finish(configs[-1], 0.55)  # the optimum is now inside: no more runs
    assert study.next_config() is None
    assert study.cell_configs(cell)[1] is False
    assert study.results()[0]["selected"]["config"].learning_rate == pytest.approx(0.2)


def test_extension_stops_at_its_limit_and_ties_pick_the_smaller_rate(tmp_path):
    study = scaling.Study(str(tmp_path), methods=["msgd"], batch_sizes=[8192], max_extensions=1)
    cell = study.cells[0]
    for config in study.grid(cell):
        _finish(config, 0.1)  # all diverged: the smallest rate wins the tie, extend downwards
    configs, _ = study.cell_configs(cell)
    assert configs[0].learning_rate == pytest.approx(study.grid(cell)[0].learning_rate / 2)
    _finish(configs[0], 0.1)
    configs, on_edge = study.cell_configs(cell)
    assert len(configs) == 5 and on_edge  # still the edge, and no extension left
    assert study.next_config() is None


def test_runs_that_learned_nothing_rank_last_and_a_grid_of_them_extends_below(tmp_path):
    # MSGD at B = 8192 as measured: two runs diverged (no finite loss), two
    # stalled above ln 10 = 2.3026; those predicting one class score its
    # share of the validation split, more than the diverged run at 0.4.
    study = scaling.Study(str(tmp_path), methods=["msgd"], batch_sizes=[8192], max_extensions=3)
    cell = study.cells[0]
    grid = study.grid(cell)
    assert [c.learning_rate for c in grid] == pytest.approx([0.4, 0.8, 1.6, 3.2], rel=1e-3)
    common = dict(best_validation_accuracy=0.1, updates=60, wall_seconds=60.0, gradient_noise_scale=25.0)
    losses = [float("nan"), 2.3498, 2.3166, float("nan")]
    for config, accuracy, loss in zip(grid, [0.0956, 0.0932, 0.1006, 0.1006], losses):
        _finish(config, accuracy, train_loss=loss, **common)
    assert not any(scaling.learned(c, RunDir(c.model_dir).finished_summary(None)) for c in grid)
    configs, on_edge = study.cell_configs(cell)
    assert configs[0].learning_rate == pytest.approx(0.2, rel=1e-3) and not on_edge
    assert study.next_config() == configs[0]
    entry = study.results()[0]
    assert not entry["learned"] and not entry["complete"]
    assert scaling.end_noise_scales([entry]) == []  # a run that learned nothing measures nothing of use
    # 0.2 learned (loss 2.0 < 0.99 ln 10 = 2.2796) with a lower validation accuracy than 1.6's one class:
    # it is selected, and being the smallest rate, extended below once more.
    _finish(configs[0], 0.0990, train_loss=2.0, **common)
    entry = study.results()[0]
    assert entry["learned"] and entry["selected"]["config"].learning_rate == pytest.approx(0.2, rel=1e-3)
    assert scaling.end_noise_scales([entry]) == [("msgd", 8192, 25.0)]
    configs, _ = study.cell_configs(cell)
    assert configs[0].learning_rate == pytest.approx(0.1, rel=1e-3)
    _finish(configs[0], 0.0980, train_loss=2.27, **common)  # learned, worse: 0.2 is now inside the grid
    assert study.cell_configs(cell) == (configs, False) and study.next_config() is None
    rows = report.markdown(study, study.results(), {}).split("## Every run")[1]
    assert rows.count("(learned nothing)") == 4 and "| 0.2 (selected) |" in rows


def test_a_grid_where_no_rate_learned_says_so_and_is_left_out_of_the_rates_fit(tmp_path):
    study = scaling.Study(
        str(tmp_path), methods=["msgd"], batch_sizes=[128, 512, 2048], lr_factors=[0.5, 1, 2], max_extensions=1
    )
    common = dict(best_validation_accuracy=0.5, updates=60, wall_seconds=60.0)
    small, medium, large = study.cells
    for cell in (small, medium):  # the centre rate learned best
        for config, accuracy in zip(study.grid(cell), [0.4, 0.5, 0.3]):
            _finish(config, accuracy, train_loss=1.0, **common)
    for config, loss in zip(study.grid(large), [2.3026, float("nan"), 2.31]):
        _finish(config, 0.1, train_loss=loss, **common)
    _finish(study.cell_configs(large)[0][0], 0.1, train_loss=2.3027, **common)  # the extension below: no better
    table = study.results()
    assert [e["learned"] for e in table] == [True, True, False]
    assert [e["on_edge"] for e in table] == [False, False, True]
    # The linear rule's centres c and 4c at B = 128 and 512 were selected: k = 1; 2048 is left out.
    assert scaling.rate_exponent(table, "msgd") == pytest.approx(1.0, rel=1e-4)
    text = report.markdown(study, table, {})
    assert "(edge of grid) (no rate learned) |" in text
    assert "- MSGD: k = 1.00 (grid centred on the linear rule, k = 1); no rate learned at B = 2048, left out" in text


def test_learned_compares_the_final_training_loss_with_ln_k(tmp_path):
    config = scaling.Study(str(tmp_path), methods=["sngm"], batch_sizes=[128]).grid(scaling.Cell("sngm", 128))[0]
    assert scaling.learned(config, {"train_loss": 2.27})  # 0.99 ln 10 = 2.2796 (cifar10, by its name)
    assert not scaling.learned(config, {"train_loss": 2.29})
    assert not scaling.learned(config, {"train_loss": float("inf")})
    assert scaling.learned(config, {"train_loss": 4.5, "num_classes": 100})  # 0.99 ln 100 = 4.559
    assert not scaling.learned(config, {"train_loss": 4.6, "num_classes": 100})
    assert scaling.learned(config, {})  # no loss recorded: judged by its accuracy alone


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        (dict(methods=["adam"]), "--methods"),
        (dict(methods=[]), "--methods"),
        (dict(batch_sizes=[128, 1000]), "--batch_sizes"),
        (dict(batch_sizes=[]), "--batch_sizes"),
        (dict(lr_factors=[]), "--lr_grid"),
        (dict(lr_factors=[1.0, -1.0]), "--lr_grid"),
        (dict(target=1.0), "--target_accuracy"),
        (dict(target=0.0), "--target_accuracy"),
        (dict(max_extensions=-1), "--max_extensions"),
    ],
)
def test_bad_study_arguments_name_their_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        scaling.Study("out", **kwargs)


def reproduce(*args):
    return subprocess.run(
        [sys.executable, "-m", "apps.reproduce", "--study=batch_scaling", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )


# The library checks each argument (above); the app is run for two of them,
# to show the one-line refusal with nothing written.
@pytest.mark.parametrize(
    "args, flag",
    [
        (["--methods=msgd,adam"], "--methods"),
        (["--lr_grid="], "--lr_grid"),
        (["--models=resnet20,twoconv"], "--models"),
        (["--models=resnet21"], "--models"),
    ],
)
def test_the_app_refuses_bad_input_in_one_line_writing_nothing(tmp_path, args, flag):
    out = tmp_path / "study"
    result = reproduce("--dataset=sample", f"--output_dir={out}", *args)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {flag}") and "Traceback" not in result.stderr
    assert not out.exists()


def test_dry_run_lists_the_extensions_the_finished_runs_call_for(tmp_path):
    out = tmp_path / "study"
    study = scaling.Study(
        str(out), methods=["sngm"], batch_sizes=[128, 512], lr_factors=[1, 2], overrides={"dataset": "sample"}
    )
    folder.claim_settings(str(out), study.settings())
    small, _ = study.cells
    for config, accuracy in zip(study.grid(small), [0.5, 0.6]):  # best at the top edge: extended above
        _finish(config, accuracy, train_loss=1.0, examples_per_second=1000.0)
        with open(os.path.join(config.model_dir, "config.json"), "w") as f:
            json.dump(config.result_fields(), f)
    result = reproduce(
        "--dataset=sample",
        "--methods=sngm",
        "--batch_sizes=128,512",
        "--lr_grid=1,2",
        f"--output_dir={out}",
        "--dry_run",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "study batch_scaling (twoconv on sample): 2 cells x 2 rates = 4 runs and 1 grid extensions so far (3 to run)"
    )
    assert lines[0].endswith("plus up to 11 more extensions")  # 6 per cell by default
    extension = study.cell_configs(small)[0][-1]
    assert extension.learning_rate == pytest.approx(4 * scaling.centre_rate("sngm", 128), rel=1e-5)
    assert [line.split("epochs=10 ")[1] for line in lines[1:]] == [
        "finished",
        "finished",
        "to run (extension)",
        "to run",
        "to run",
    ]
    assert os.path.basename(extension.model_dir) in lines[3]


def test_models_picks_the_network_and_a_study_folder_keeps_its_own(tmp_path):
    out = tmp_path / "study"
    # cifar10's size is known without its files, so the plan has an estimate; nothing is read.
    args = ["--dataset=cifar10", "--methods=sngm", "--batch_sizes=128,512", "--lr_grid=1", f"--output_dir={out}"]
    result = reproduce(*args, "--models=resnet20", "--dry_run")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("study batch_scaling (resnet20 on cifar10): 2 cells x 1 rates = 2 runs")
    # No finished run and no speed given: no guess from the default network's speed.
    assert (
        lines[-1] == "estimate: none until a run has finished (no speed known for resnet20); give --images_per_second"
    )
    assert not out.exists()

    study = scaling.Study(
        str(out), methods=["sngm"], batch_sizes=[128, 512], lr_factors=[1], overrides={"dataset": "sample"}
    )
    folder.claim_settings(str(out), study.settings())  # a two-conv study holds the folder
    refused = reproduce(*args, "--models=resnet20", "--dry_run")
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --output_dir") and "model" in last and "Traceback" not in refused.stderr


def test_export_commands_lists_the_grid_then_the_extensions_its_runs_call_for(tmp_path):
    out = tmp_path / "study"
    args = ["--dataset=sample", "--methods=sngm", "--batch_sizes=128,512", "--lr_grid=1,2", f"--output_dir={out}"]
    study = scaling.Study(
        str(out), methods=["sngm"], batch_sizes=[128, 512], lr_factors=[1, 2], overrides={"dataset": "sample"}
    )
    small, large = study.cells
    first = reproduce(*args, "--export_commands")
    assert first.returncode == 0, first.stderr[-2000:]
    grid = study.grid(small) + study.grid(large)
    expected = [f"python -m apps.train --flagfile={out}/runs/{os.path.basename(c.model_dir)}.flags" for c in grid]
    assert first.stdout.splitlines() == expected
    assert "4 runs ready" in first.stderr and "grid extensions" in first.stderr

    for config, accuracy in zip(study.grid(small), [0.5, 0.6]):  # best at the top edge: extended above
        _finish(config, accuracy, train_loss=1.0)
        with open(os.path.join(config.model_dir, "config.json"), "w") as f:
            json.dump(config.result_fields(), f)
    again = reproduce(*args, "--export_commands")
    assert again.returncode == 0, again.stderr[-2000:]
    extension = study.cell_configs(small)[0][-1]
    assert extension.learning_rate == pytest.approx(4 * scaling.centre_rate("sngm", 128), rel=1e-5)
    assert again.stdout.splitlines() == [
        f"python -m apps.train --flagfile={out}/runs/{os.path.basename(extension.model_dir)}.flags",
        *expected[2:],
    ]

    # Without extensions left, nothing follows the grid; a finished study lists nothing.
    single = [f"--output_dir={tmp_path / 'single'}", "--batch_sizes=128", "--lr_grid=1,1", "--max_extensions=0"]
    one = reproduce("--dataset=sample", "--methods=sngm", *single, "--export_commands")
    assert one.returncode == 0, one.stderr[-2000:]
    [command] = one.stdout.splitlines()  # the repeated factor's run once
    assert "1 run ready" in one.stderr and "rerun" not in one.stderr
    (config,) = {
        c.model_dir: c
        for c in scaling.Study(
            str(tmp_path / "single"),
            methods=["sngm"],
            batch_sizes=[128],
            lr_factors=[1, 1],
            max_extensions=0,
            overrides={"dataset": "sample"},
        ).grid(scaling.Cell("sngm", 128))
    }.values()
    _finish(config, 0.5, train_loss=1.0)
    with open(os.path.join(config.model_dir, "config.json"), "w") as f:
        json.dump(config.result_fields(), f)
    done = reproduce("--dataset=sample", "--methods=sngm", *single, "--export_commands")
    assert done.returncode == 0 and done.stdout == "" and "no run left to train" in done.stderr


@pytest.mark.slow
def test_tiny_study_selects_on_validation_writes_table_and_figure_and_resumes(tmp_path):
    out = tmp_path / "study"
    args = [
        "--dataset=sample",
        "--validation_size=500",
        "--batch_sizes=128,512",
        "--methods=sngm",
        "--lr_grid=0.5,2",
        "--epochs=1",
        "--max_extensions=0",
        "--verbose=0",
        f"--output_dir={out}",
    ]
    first = reproduce(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("\n== ") == 4
    results = (out / "results.md").read_text()
    assert "\n- model: twoconv\n" in results
    # 4500 training images kept; each epoch uses 4480 (35 micro-batches of 128) at either B: 8 x 512, then 384
    assert "| SNGM | 128 | 35 |" in results and "| SNGM | 512 | 9 |" in results
    assert results.count("(selected)") == 2
    for run in scaling.Study(
        str(out),
        methods=["sngm"],
        batch_sizes=[128, 512],
        lr_factors=[0.5, 2],
        max_extensions=0,
        overrides={"dataset": "sample", "validation_size": 500, "epochs": 1},
    ).results():
        chosen = run["selected"]["summary"]["validation_accuracy"]
        learners = [r for r in run["runs"] if scaling.learned(r["config"], r["summary"])] or run["runs"]
        assert chosen == max(r["summary"]["validation_accuracy"] for r in learners)
        rows = RunDir(run["selected"]["config"].model_dir).read_validation()
        # 4 evaluations an epoch: every 35 // 4 updates or every 9 // 4, plus the end
        assert len(rows) == 5
    assert (out / "batch_scaling.png").stat().st_size > 10_000

    # --report_only rewrites the table from the finished runs and trains nothing.
    (out / "results.md").unlink()
    report = reproduce(*args, "--report_only")
    assert report.returncode == 0 and "\n== " not in report.stdout
    rewritten = (out / "results.md").read_text()
    assert rewritten.split("## Every run")[1] == results.split("## Every run")[1]

    # A killed study: one run's summary gone, as if stopped before its end. Only that run trains again.
    lost = next((out / "runs").glob("sngm_b512_*/summary.json"))
    lost.unlink()
    again = reproduce(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("\n== ") == 1 and f"== {lost.parent.name}" in again.stdout
