"""The training app end to end: outputs, presets, resume after SIGKILL, bad input."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from sngm_keras.data import DataError
from sngm_keras.training import PRESETS, ConfigError, TrainConfig, train
from sngm_keras.training.flagfile import flagfile_text
from sngm_keras.training.outputs import rounded_for_report, selected_epoch
from sngm_keras.training.rundir import RunDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset=sample", "--model=twoconv", "--batch_size=500", "--micro_batch_size=250", "--verbose=0"]


def app(*args, wait=True, timeout=300):
    command = [sys.executable, "-m", "apps.train", *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def history(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def final_weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "final.keras")).get_weights()


NEEDS_200 = "two windows of its 100-update average"


def significant_digits(x):
    return len(repr(abs(x)).split("e")[0].replace(".", "").strip("0"))


def assert_rounded_for_report(summary):
    """Floats as they mean: seconds to 0.1, the other figures to 6 significant digits (the flags are exact)."""
    for key, value in summary.items():
        if isinstance(value, float) and key.endswith("_seconds"):
            assert round(value, 1) == value, (key, value)
        elif isinstance(value, float):
            assert significant_digits(value) <= 6, (key, value)


def test_sample_run_writes_every_output(tmp_path):
    model_dir = str(tmp_path / "run")
    result = app(*TINY, "--epochs=2", "--learning_rate=0.3", f"--model_dir={model_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    finished, noise = result.stdout.strip().splitlines()[-2:]
    assert re.fullmatch(
        rf"run finished: final test accuracy 0\.\d{{4}}; 20 updates, \d+ examples/s; results in {re.escape(model_dir)}",
        finished,
    ), finished
    assert noise == f"gradient noise scale: not settled yet: 20 updates, needs 200 ({NEEDS_200})"
    for name in ("config.json", "history.csv", "summary.json", "final.keras", "logs", "checkpoints"):
        assert os.path.exists(os.path.join(model_dir, name)), name
    for plot in ("curves", "noise_scale"):  # each as PNG and as PDF
        heads = [open(os.path.join(model_dir, plot + ext), "rb").read(4) for ext in (".png", ".pdf")]
        assert heads == [b"\x89PNG", b"%PDF"], plot
    summary = json.load(open(os.path.join(model_dir, "summary.json")))
    assert "best_validation_epoch" not in summary  # no validation split
    for key in (
        "test_accuracy",
        "max_test_accuracy_over_epochs_not_for_selection",
        "train_loss",
        "updates",
        "examples_per_second",
        "wall_seconds",
        "backend",
    ):
        assert summary[key] is not None, key
    assert summary["updates"] == 20 and summary["backend"] == "tensorflow"
    assert summary["flags"]["learning_rate"] == 0.3 and summary["flags"]["micro_batch_size"] == 250
    assert 0.0 <= summary["test_accuracy"] <= summary["max_test_accuracy_over_epochs_not_for_selection"] <= 1.0
    assert "best_test_accuracy" not in summary  # a test-split maximum under a name that reads as a result
    assert_rounded_for_report(summary)
    rows = history(model_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [int(r["updates"]) for r in rows] == [10, 20]
    assert [float(r["grad_per_n"]) for r in rows] == [1.0, 2.0]
    assert float(rows[-1]["learning_rate"]) == pytest.approx(0.0, abs=1e-7)  # poly decays to 0 at the end
    assert float(rows[0]["learning_rate"]) == pytest.approx(0.3 * 0.5**1.1, rel=1e-5)
    model = keras.models.load_model(os.path.join(model_dir, "final.keras"))
    assert model.output_shape == (None, 10)
    # The gradient noise scale (two micro-batches of 250 a step): per epoch,
    # in the summary, plotted, and read out at the end.
    assert all(float(r["gradient_variance_ema"]) > 0 for r in rows)
    assert summary["gradient_noise_scale"] == float(f"{float(rows[-1]['gradient_noise_scale']):.6g}")
    assert 0 < summary["gradient_noise_scale"] < 1e6

    # The same command again finds the finished run and trains nothing
    # (--nonoise_scale does not change what a run computes).
    again = app(*TINY, "--epochs=2", "--learning_rate=0.3", "--nonoise_scale", f"--model_dir={model_dir}")
    assert again.returncode == 0 and "was already complete" in again.stdout

    # Another configuration may not write into this folder.
    before = open(os.path.join(model_dir, "summary.json")).read()
    other = app(*TINY, "--epochs=2", "--learning_rate=0.1", f"--model_dir={model_dir}")
    assert other.returncode == 2
    assert other.stderr.strip().splitlines()[-1].startswith("error: --model_dir:")
    assert "learning_rate" in other.stderr
    assert open(os.path.join(model_dir, "summary.json")).read() == before


def test_summary_floats_are_rounded_to_what_they_mean(tmp_path):
    """The summary of a float32 training (the committed 40-epoch SNGM run's,
    written before rounding), rounded, written and read back."""
    record = os.path.join(ROOT, "docs", "table2", "40_epochs", "runs", "resnet20_sngm_b4096_lr0.8", "summary.json")
    raw = json.load(open(record))
    raw["flags"]["learning_rate"] = 0.123456789  # a configured rate of more than 6 digits stays as configured
    with pytest.raises(AssertionError):
        assert_rounded_for_report(raw)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(rounded_for_report(raw), indent=2))
    summary = json.loads(path.read_text())
    assert_rounded_for_report(summary)
    assert summary["flags"] == raw["flags"] and summary["flags"]["learning_rate"] == 0.123456789
    assert [summary[k] for k in ("test_accuracy", "test_loss", "wall_seconds", "gradient_noise_scale")] == [
        0.8326,
        0.510123,
        12634.9,
        3430.92,
    ]
    assert summary["updates"] == 440 and summary["validation_accuracy"] == 0.84 and summary["git"] == raw["git"]


def test_the_validation_split_selects_the_reported_epoch():
    rows = [
        {"epoch": 1, "validation_accuracy": 0.5, "test_accuracy": 0.48},
        {"epoch": 2, "validation_accuracy": 0.7, "test_accuracy": ""},  # no test evaluation (--eval_every)
        {"epoch": 3, "validation_accuracy": 0.6, "test_accuracy": 0.61},
        {"epoch": 4, "validation_accuracy": 0.6, "test_accuracy": 0.63},
    ]
    assert selected_epoch(rows) == {"best_validation_epoch": 3, "test_accuracy_at_best_validation_epoch": 0.61}
    assert selected_epoch([{"epoch": 1, "validation_accuracy": "", "test_accuracy": 0.5}]) == {}


APP_TEXT = """
import json, sys
from apps import train
print(json.dumps([getattr(train, name)(*args) for name, args in json.loads(sys.argv[1])]))
"""


def app_text(calls):
    """What apps.train's functions return for each (name, arguments) of `calls`, in one process."""
    result = subprocess.run(
        [sys.executable, "-c", APP_TEXT, json.dumps(calls)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def closed_form_noise_scale(sq_delta):
    """B_simple of tests/test_noise_scale.py's least-squares problem (d = 16, s2 = 1) at |delta|^2 = sq_delta."""
    return 17 + 16 / sq_delta


def test_end_of_run_lines():
    # |delta|^2 halving every 50 updates: B_simple 33, 49, 81, 145.
    rising = [(50 * (e + 1), closed_form_noise_scale(1 / 2**e)) for e in range(4)]
    level = [(updates, 33.0) for updates, _ in rising]
    falling = [(updates, scale) for (updates, _), (_, scale) in zip(rising, reversed(rising))]
    measured = lambda updates, scale: {"updates": updates, "gradient_noise_scale": scale, "gradient_sq_norm_ema": 1.0}
    result = {
        "test_accuracy": 0.8326,
        "best_validation_epoch": 38,
        "test_accuracy_at_best_validation_epoch": 0.8301,
        "updates": 440,
        "examples_per_second": 156.512,
    }
    old = json.load(open(os.path.join(ROOT, "docs", "table2", "runs", "resnet20_msgd_b128", "summary.json")))
    calls = [
        ("finished_line", ["finished", result, "runs/a"]),
        ("finished_line", ["was already complete", old, "runs/b"]),  # a summary from before the selected epoch
        ("noise_scale_lines", [measured(150, 33.0), level[:3], 64]),
        ("noise_scale_lines", [measured(200, 33.0), level, 64]),
        ("noise_scale_lines", [measured(200, 145.0), rising, 64]),
        ("noise_scale_lines", [measured(200, 33.0), falling, 64]),
        ("noise_scale_lines", [dict(measured(300, None), gradient_sq_norm_ema=-0.5), level, 64]),
        ("noise_scale_lines", [{"updates": 300, "gradient_noise_scale": None, "gradient_sq_norm_ema": None}, [], 64]),
    ]
    critical = "(McCandlish et al.'s critical batch: B_simple to a power of two)"
    assert app_text(calls) == [
        "run finished: final test accuracy 0.8326 (0.8301 at epoch 38, the epoch of highest validation accuracy); "
        "440 updates, 157 examples/s; results in runs/a",
        "run was already complete: final test accuracy 0.8342; 7020 updates, 274 examples/s; results in runs/b",
        ["gradient noise scale: not settled yet: 150 updates, needs 200 (two windows of its 100-update average)"],
        [
            "gradient noise scale B_simple ~ 33 at the end (its average over ~100 updates), level: x1.00 over the "
            "last 100 updates",
            f"suggested batch B ~ 32 {critical}; at B = 64 this run takes ~1.52x the minimal steps, ~2.94x the "
            "minimal examples",
        ],
        [
            "gradient noise scale B_simple ~ 145 at the end (its average over ~100 updates), still rising: x2.96 over "
            "the last 100 updates",
            f"suggested batch B ~ 128 or more {critical}; at B = 64 this run takes ~3.27x the minimal steps, ~1.44x "
            "the minimal examples",
        ],
        [
            "gradient noise scale B_simple ~ 33 at the end (its average over ~100 updates), falling: x0.41 over the "
            "last 100 updates",
            f"suggested batch B ~ 32 or less {critical}; at B = 64 this run takes ~1.52x the minimal steps, ~2.94x "
            "the minimal examples",
        ],
        ["gradient noise scale: not measurable (its |G|^2 average is not positive); the batch is likely below it"],
        [],
    ]


def wait_for_epoch(model_dir, epoch, process, timeout=240):
    state = os.path.join(model_dir, "checkpoints", "state.json")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(state):
            try:
                if json.load(open(state))["epoch"] >= epoch:
                    return
            except (ValueError, KeyError):
                pass
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
def test_kill_and_resume_is_exact_with_deterministic(tmp_path):
    args = [*TINY, "--epochs=3", "--deterministic"]
    straight = str(tmp_path / "straight")
    assert app(*args, f"--model_dir={straight}").returncode == 0

    resumed = str(tmp_path / "resumed")
    process = app(*args, f"--model_dir={resumed}", wait=False)
    wait_for_epoch(resumed, 1, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_state = json.load(open(os.path.join(resumed, "checkpoints", "state.json")))
    killed_at = killed_state["epoch"]
    assert 1 <= killed_at < 3
    assert not os.path.exists(os.path.join(resumed, "summary.json"))

    result = app(*args, f"--model_dir={resumed}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"(epoch {killed_at})" in result.stderr  # it resumed, not restarted
    rows = history(resumed)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [int(r["updates"]) for r in rows] == [10, 20, 30]
    summary = json.load(open(os.path.join(resumed, "summary.json")))
    assert summary["updates"] == 30
    assert summary["started_utc"] == killed_state["started_utc"]  # the run's first start, kept across the resume
    for a, b in zip(final_weights(resumed), final_weights(straight)):
        np.testing.assert_array_equal(a, b)
    # Resumed test accuracies are those of the uninterrupted run, and so are
    # the noise scale's averages, which the checkpoint carries across the kill.
    assert [r["test_accuracy"] for r in rows] == [r["test_accuracy"] for r in history(straight)]
    for key in ("gradient_noise_scale", "gradient_sq_norm_ema", "gradient_variance_ema"):
        assert [r[key] for r in rows] == [r[key] for r in history(straight)] and rows[-1][key] != ""


def test_every_preset_is_a_valid_configuration(tmp_path):
    assert len(PRESETS) == 1 + 12 + 4 + 4
    for name in PRESETS:
        config = TrainConfig.from_preset(name, model_dir=str(tmp_path / name)).validate()
        assert config.preset == name
    sngm = TrainConfig.from_preset("table2_resnet20_sngm_b4096", model_dir=str(tmp_path))
    assert (sngm.model, sngm.optimizer, sngm.batch_size, sngm.micro_batch_size) == ("resnet20", "sngm", 4096, 128)
    assert (sngm.learning_rate, sngm.power, sngm.weight_decay, sngm.epochs, sngm.warmup_epochs) == (
        1.6,
        1.1,
        1e-4,
        160,
        0,
    )
    lars = TrainConfig.from_preset("table2_resnet56_lars_warmup_b4096", model_dir=str(tmp_path))
    assert (lars.learning_rate, lars.power, lars.warmup_epochs, lars.warmup_learning_rate) == (2.8, 2.0, 5, 0.1)
    msgd = TrainConfig.from_preset("table3_resnet50_msgd_b256", model_dir=str(tmp_path))
    assert (msgd.lr_schedule, msgd.decay_epochs, msgd.batch_size, msgd.epochs) == ("step", (30, 60), 256, 90)
    overridden = TrainConfig.from_preset("table2_resnet20_sngm_b4096", learning_rate=2.0, model_dir=str(tmp_path))
    assert overridden.learning_rate == 2.0 and overridden.batch_size == 4096
    with pytest.raises(ConfigError, match="--preset"):
        TrainConfig.from_preset("table9")


@pytest.mark.parametrize(
    "dataset, model, extra",
    [("cifar10", "twoconv", {}), ("imagenet2012", "resnet18", {"image_size": 32})],
)
def test_tfds_mock_data(tmp_path, dataset, model, extra):
    config = TrainConfig(
        dataset=dataset,
        model=model,
        optimizer="sngm",
        batch_size=16,
        micro_batch_size=8,
        learning_rate=0.1,
        epochs=1,
        max_updates=2,
        eval_batch_size=16,
        verbose=0,
        model_dir=str(tmp_path / "run"),
        **extra,
    )
    with tfds.testing.mock_data(num_examples=64):
        summary = train(config)
    assert summary["updates"] == 2 and summary["num_train"] == 64
    assert summary["micro_batch_size"] == 8
    weights = final_weights(config.model_dir)
    assert all(np.all(np.isfinite(w)) for w in weights)
    assert keras.models.load_model(os.path.join(config.model_dir, "final.keras")).output_shape[-1] == (
        10 if dataset == "cifar10" else 1000
    )


def test_mirrored_on_logical_cpus_matches_flags(tmp_path):
    model_dir = str(tmp_path / "mirrored")
    result = app(
        *TINY,
        "--epochs=1",
        "--max_updates=2",
        "--num_cpu_devices=2",
        "--strategy=mirrored",
        "--nonoise_scale",
        f"--model_dir={model_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.load(open(os.path.join(model_dir, "summary.json")))
    assert summary["replicas"] == 2 and summary["updates"] == 2 and summary["micro_batch_size"] == 250
    assert summary["gradient_noise_scale"] is None and summary["gradient_variance_ema"] is None
    assert history(model_dir)[0]["gradient_noise_scale"] == ""
    assert not os.path.exists(os.path.join(model_dir, "noise_scale.png"))
    assert "noise scale" not in result.stdout + result.stderr


# -- failed starts, settings conflicts, default folders, flagfiles ------------


def test_a_failed_start_writes_nothing_and_its_remains_do_not_block_the_fix(tmp_path):
    model_dir = tmp_path / "run"
    missing = TrainConfig(dataset="cifar10", data_dir=str(tmp_path), epochs=1, verbose=0, model_dir=str(model_dir))
    with pytest.raises(DataError, match="cifar10 not found"):
        train(missing)
    assert not model_dir.exists()

    # What a start that died before its first epoch leaves (older versions
    # left this after a data error): config.json of other settings, empty
    # checkpoints/, TensorBoard logs. It is not another run.
    os.makedirs(model_dir / "checkpoints")
    os.makedirs(model_dir / "logs")
    (model_dir / "config.json").write_text(json.dumps(missing.result_fields()))
    fixed = TrainConfig(
        dataset="sample",
        batch_size=500,
        micro_batch_size=250,
        epochs=1,
        max_updates=1,
        verbose=0,
        model_dir=str(model_dir),
    )
    summary = train(fixed)
    assert summary["updates"] == 1 and summary["flags"]["dataset"] == "sample"
    assert json.load(open(model_dir / "config.json")) == fixed.result_fields()


def fake_run(model_dir, config):
    """A run folder holding `config`'s run with one finished epoch."""
    os.makedirs(os.path.join(model_dir, "checkpoints"))
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(dict(config.result_fields(), preset=config.preset), f)
    with open(os.path.join(model_dir, "history.csv"), "w") as f:
        f.write("epoch,updates\n1,10\n")


def test_settings_conflict_names_every_difference_and_only_those(tmp_path):
    model_dir = str(tmp_path / "demo")
    fake_run(model_dir, TrainConfig.from_preset("demo", model_dir=model_dir))
    msgd = TrainConfig(optimizer="msgd", model_dir=model_dir, verbose=0, max_updates=3)
    with pytest.raises(ConfigError) as refused:
        RunDir(model_dir).check(msgd)
    assert str(refused.value) == (
        f"--model_dir: {model_dir} holds a run with other settings (--micro_batch_size: 100 there, None now; "
        "--optimizer: 'sngm' there, 'msgd' now); use another --model_dir"
    )
    # The preset's name, verbosity, --max_updates are not settings of the run.
    RunDir(model_dir).check(TrainConfig(micro_batch_size=100, model_dir=model_dir, verbose=2, max_updates=3))


DEFAULT_DIRS = """
import json, sys
from absl import flags
from apps import _cli, train
out = {}
for args in json.loads(sys.argv[1]):
    _cli.parse_flags(["train", *args])
    out[" ".join(args)] = train.config_from_flags().model_dir
print(json.dumps(out))
"""


def train_flag_parsing(argument_lists, cwd):
    """apps.train's model_dir for each argument list, parsed in one process."""
    result = subprocess.run(
        [sys.executable, "-c", DEFAULT_DIRS, json.dumps(argument_lists)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_default_model_dir_follows_the_settings(tmp_path):
    demo_flags = [
        "--dataset=sample",
        "--model=twoconv",
        "--optimizer=sngm",
        "--batch_size=500",
        "--micro_batch_size=100",
        "--learning_rate=0.2",
        "--momentum=0.9",
        "--weight_decay=0.0005",
        "--lr_schedule=poly",
        "--power=1.1",
        "--epochs=30",
    ]
    lists = [
        ["--preset=demo"],
        [],
        ["--optimizer=msgd"],
        ["--preset=demo", "--optimizer=msgd"],
        ["--preset=demo", "--verbose=0", "--max_updates=5"],
        demo_flags,
        ["--learning_rate=0.3"],
    ]
    dirs = train_flag_parsing(lists, str(tmp_path))
    by = [dirs[" ".join(a)] for a in lists]
    assert by[0] == os.path.join("runs", "demo")
    assert by[1] != by[0] and by[1].startswith(os.path.join("runs", "twoconv_sngm_b500-"))
    assert by[2].startswith(os.path.join("runs", "twoconv_msgd_b500-")) and by[2] != by[1]
    assert by[3].startswith(os.path.join("runs", "demo-")) and by[3] != by[2]
    assert by[4] == by[0]  # what does not change the run does not change its folder
    # The demo's settings spelled as flags: the demo's digest, another name.
    digest = TrainConfig.from_preset("demo").settings_digest()
    assert by[5] == os.path.join("runs", f"twoconv_sngm_b500-{digest}")
    assert len(set(by)) == 6


ROUND_TRIP = """
import json, sys
from apps import _cli, train
for path in sys.argv[1:]:
    _cli.parse_flags(["train", "--flagfile=" + path])
    print(json.dumps(train.config_from_flags().to_dict()))
"""


def test_flagfile_round_trips_through_the_apps_flags(tmp_path):
    folder = tmp_path / "images"
    os.makedirs(folder / "train")
    os.makedirs(folder / "test")
    configs = [
        # A tuner's best trial with every setting off its default.
        TrainConfig(
            dataset=str(folder),
            model="resnet20",
            optimizer="sngm",
            batch_size=1000,
            micro_batch_size=250,
            learning_rate=0.123456789012345,
            momentum=0.95,
            weight_decay=3.3e-5,
            power=1.7,
            warmup_epochs=2,
            warmup_learning_rate=0.01,
            epochs=7,
            max_updates=99,
            strategy="one_device",
            seed=7,
            augment=False,
            deterministic=True,
            jit_compile=True,
            dtype_policy="mixed_bfloat16",
            eval_every=2,
            eval_batch_size=250,
            verbose=2,
            model_dir=str(tmp_path / "best_trial_3"),
        ),
        TrainConfig(
            dataset="cifar100",
            data_dir=str(tmp_path),
            download=True,
            optimizer="msgd",
            lr_schedule="step",
            decay_epochs=(3, 5),
            decay_factor=4.0,
            epochs=6,
            model_dir=str(tmp_path / "step"),
        ),
        TrainConfig(
            dataset="imagenet2012",
            model="resnet18",
            optimizer="lars",
            image_size=64,
            trust_coefficient=0.02,
            lr_schedule="constant",
            model_dir=str(tmp_path / "imagenet"),
        ),
        TrainConfig.from_preset("table2_resnet56_msgd_b4096", model_dir=str(tmp_path / "preset")),
    ]
    paths = []
    for i, config in enumerate(configs):
        paths.append(str(tmp_path / f"{i}.flags"))
        with open(paths[-1], "w") as f:
            f.write(flagfile_text(config, header=["a comment"]))
    result = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP, *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parsed = [json.loads(line) for line in result.stdout.strip().splitlines()[-len(configs) :]]
    for config, values in zip(configs, parsed):
        assert values == config.to_dict()


def tiny_image_folder(root, per_class=64):
    """Two classes of 32x32 noise: 4 updates an epoch at batch 32."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", 8)):
        for label in ("a", "b"):
            os.makedirs(os.path.join(root, split, label))
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(root, split, label, f"{i}.png"))
    return str(root)


def test_a_run_cut_by_max_updates_continues_exactly_when_rerun_without_it(tmp_path):
    data = tiny_image_folder(tmp_path / "data")
    args = [
        f"--dataset={data}",
        "--model=twoconv",
        "--batch_size=32",
        "--micro_batch_size=16",
        "--eval_batch_size=16",
        "--verbose=0",
        "--epochs=2",
        "--deterministic",
    ]
    straight, cut = str(tmp_path / "straight"), str(tmp_path / "cut")
    first = app(*args, f"--model_dir={straight}", wait=False)
    stopped = app(*args, "--max_updates=5", f"--model_dir={cut}")  # 1 update into epoch 2
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "stopped at --max_updates=5; rerun without it to continue" in stopped.stdout
    summary = json.load(open(os.path.join(cut, "summary.json")))
    assert summary["updates"] == 5 and not summary["complete"] and summary["epochs_completed"] == 1
    state = json.load(open(os.path.join(cut, "checkpoints", "state.json")))
    assert (state["updates"], state["epoch"], state["batch"]) == (5, 1, 1)  # checkpointed where it was cut

    again = app(*args, "--max_updates=5", f"--model_dir={cut}")
    assert again.returncode == 0 and "had already stopped at --max_updates" in again.stdout
    resumed = app(*args, f"--model_dir={cut}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "run finished" in resumed.stdout and "(epoch 1, batch 1 of epoch 2)" in resumed.stderr
    first.communicate(timeout=300)
    assert first.returncode == 0
    summary = json.load(open(os.path.join(cut, "summary.json")))
    assert summary["complete"] and summary["updates"] == 8
    assert [int(r["updates"]) for r in history(cut)] == [4, 8]
    for a, b in zip(final_weights(cut), final_weights(straight)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_mirrored_epoch_ends_with_whole_micro_batches_of_each_replica(tmp_path):
    """Two replicas, micro-batches of 128: epochs are a multiple of 256
    examples (4,352 of the 4,500 kept), four batches of 1024 and a last of
    256, one micro-batch per replica."""
    model_dir = str(tmp_path / "run")
    result = app(
        "--dataset=sample",
        "--model=twoconv",
        "--verbose=0",
        "--batch_size=1024",
        "--micro_batch_size=128",
        "--validation_size=500",
        "--epochs=1",
        "--num_cpu_devices=2",
        "--strategy=mirrored",
        f"--model_dir={model_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.load(open(os.path.join(model_dir, "summary.json")))
    assert summary["replicas"] == 2 and summary["updates"] == 5
    assert summary["grad_per_n"] == pytest.approx(4352 / 4500)
    assert summary["gradient_variance_ema"] > 0
