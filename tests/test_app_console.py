"""What a user sees on the console: flag mistakes and --help answered before
TensorFlow loads, nothing of TensorFlow's own log whatever
TF_CPP_MIN_LOG_LEVEL says, a progress bar that counts the updates made, and
one line for a dataset that is not there."""

import json
import os
import subprocess
import sys

import pytest

from sngm_keras.training.config import ConfigError, TrainConfig
from sngm_keras.training.config_checks import keras_backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs an app's module as `python -m` does, then prints the exit code and
# which of TensorFlow, Keras and JAX were imported, as the last line of stdout.
PROBE = """
import json, runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
code = 0
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "imported": [m for m in ("tensorflow", "keras", "jax") if m in sys.modules]}))
"""


def environment(log_level):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    if log_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = log_level
    return env


def probe(module, *args, log_level=None):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module, *args],
        cwd=ROOT,
        env=environment(log_level),
        capture_output=True,
        text=True,
        timeout=300,
    )
    *printed, last = result.stdout.splitlines()
    return json.loads(last), printed, result.stderr


@pytest.mark.parametrize(
    "module, args, message",
    [
        ("apps.train", ["--optimizer=adam"], "error: --optimizer: must be one of sngm, msgd, lars, got 'adam'"),
        ("apps.train", ["--batch_size=x"], "error: flag --batch_size=x: invalid literal for int() with base 10: 'x'"),
        (
            "apps.train",
            ["--model=resnet21"],
            "error: --model: must be one of resnet20, resnet32, resnet44, resnet56, "
            "resnet110, resnet18, resnet34, resnet50, twoconv, got 'resnet21'",
        ),
        ("apps.tune", ["--verbose=9"], "error: --verbose: must be one of 0, 1, 2, got 9"),
        ("apps.tune", ["--tuner=grid"], "error: --tuner: must be one of random, bayesian, hyperband, got 'grid'"),
        (
            "apps.reproduce",
            ["--study=table4"],
            "error: --study: must be one of table2, table3, figure1_cpu, batch_scaling, adaptive_batch, got 'table4'",
        ),
        (
            "apps.import_data",
            ["--source=/no/such/archive.tar.gz", "--data_dir=unused"],
            "error: --source: /no/such/archive.tar.gz not found",
        ),
    ],
)
def test_flag_mistakes_are_answered_before_tensorflow_loads(module, args, message):
    for log_level in (None, "3"):
        result, printed, stderr = probe(module, *args, log_level=log_level)
        assert result == {"code": 2, "imported": []}, (result, stderr[-2000:])
        assert stderr.splitlines() == [message] and printed == []


@pytest.mark.parametrize("module", ["apps.train", "apps.reproduce", "apps.tune", "apps.import_data"])
def test_help_is_answered_before_tensorflow_loads(module):
    result, printed, stderr = probe(module, "--help")
    assert result["imported"] == [], result
    assert any(line.strip().startswith("--") for line in printed + stderr.splitlines())


def test_missing_dataset_folder_is_named_as_missing():
    with pytest.raises(ConfigError, match=r"^--dataset: no folder some/missing/folder \(it should hold train/"):
        TrainConfig(dataset="some/missing/folder", model_dir="unused").validate()
    with pytest.raises(ConfigError, match=r"^--dataset: unknown 'mnist', and no folder of that name; choose one of"):
        TrainConfig(dataset="mnist", model_dir="unused").validate()


def test_keras_backend_is_read_as_keras_reads_it(tmp_path):
    """Before Keras is imported (the apps defer it), from KERAS_BACKEND or
    keras.json; both agree with what Keras then picks."""
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    code = (
        "import sys, apps; from sngm_keras.training.config_checks import keras_backend; before = keras_backend(); "
        "assert 'keras' not in sys.modules; import keras; print(before, keras.backend.backend())"
    )
    for extra, expected in (({}, "jax"), ({"KERAS_BACKEND": "tensorflow"}, "tensorflow")):
        env = dict(os.environ, PYTHONPATH=ROOT, KERAS_HOME=str(tmp_path))
        env.pop("KERAS_BACKEND", None)
        env.update(extra)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.stdout.split() == [expected, expected], out.stderr[-2000:]
    assert keras_backend() == "tensorflow"  # this process: Keras imported, on conftest's backend


@pytest.mark.parametrize("log_level", [None, "3"])
def test_a_run_prints_only_the_apps_lines_and_counts_the_updates_it_makes(tmp_path, log_level):
    def train(max_updates):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "apps.train",
                "--dataset=sample",
                "--model=twoconv",
                "--batch_size=500",
                "--micro_batch_size=250",
                f"--max_updates={max_updates}",
                "--verbose=2",
                f"--model_dir={tmp_path / 'run'}",
            ],
            cwd=ROOT,
            env=environment(log_level),
            capture_output=True,
            text=True,
            timeout=600,
        )

    process = train(max_updates=3)
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stderr == ""
    lines = process.stdout.splitlines()
    assert lines[0] == "Epoch 1/30"
    assert lines[1].startswith("3/3 - "), lines  # 3 updates of the epoch's 10, not 10/10
    assert lines[2].startswith("run stopped at --max_updates=3; rerun without it to continue")
    assert not [line for line in lines if "run finished in" in line]
    if log_level is None:
        # Continued from update 3: the rest of epoch 1, then epoch 2, both headed by the run's 30 epochs.
        process = train(max_updates=13)
        assert process.returncode == 0, process.stderr[-3000:]
        lines = process.stdout.splitlines()
        assert [lines[0], lines[1][:6], lines[2], lines[3][:6]] == ["Epoch 1/30", "7/7 - ", "Epoch 2/30", "3/3 - "]


def test_missing_prepared_dataset_is_one_line(tmp_path):
    result, printed, stderr = probe(
        "apps.train", "--dataset=cifar10", f"--data_dir={tmp_path}", f"--model_dir={tmp_path / 'run'}", log_level="3"
    )
    assert result["code"] == 2 and printed == []
    assert stderr.splitlines() == [
        f"error: cifar10 not found in {tmp_path}; pass --download to fetch it, or import a copy you have offline "
        f"with: python -m apps.import_data --source=cifar-10-python.tar.gz --data_dir={tmp_path}"
    ]
    assert not (tmp_path / "run").exists()


def test_a_long_read_shows_what_it_reads_then_a_bar(monkeypatch, capsys):
    from apps import _cli

    clock = iter([100.0, 100.5, 103.0, 104.0, 105.0])  # the bar appears once 2 s have passed
    monkeypatch.setattr(_cli.time, "monotonic", lambda: next(clock))
    advance = _cli.show_reading("reading DIR: 3 training and 1 test images", 4)
    for _ in range(4):
        advance(1)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "reading DIR: 3 training and 1 test images"
    assert len(lines) == 2 and lines[1].startswith("4/4 - "), lines  # not a terminal: one line at the end

    clock = iter([0.0, 0.1, 0.2])
    advance = _cli.show_reading("reading DIR: 1 training and 1 test images", 2)
    advance(1), advance(1)
    assert capsys.readouterr().out.splitlines() == ["reading DIR: 1 training and 1 test images"]


CONFIG_OF = """
import json, sys
import apps
from apps import train
train.FLAGS(["train", *sys.argv[1:]])
try:
    config = train.config_from_flags()
except SystemExit as stop:
    print(json.dumps({"code": stop.code}))
else:
    print(json.dumps({k: config.to_dict()[k] for k in
        ("dataset", "optimizer", "batch_size", "micro_batch_size", "learning_rate", "weight_decay", "lr_schedule",
         "decay_epochs", "epochs")}))
"""


def config_of(*args):
    result = subprocess.run(
        [sys.executable, "-c", CONFIG_OF, *args], cwd=ROOT, env=environment("3"), capture_output=True, text=True
    )
    return json.loads(result.stdout.splitlines()[-1]), result.stderr


def test_a_resnet_brings_the_papers_recipe_for_its_optimizer():
    table2_sngm = {
        "dataset": "cifar10",
        "optimizer": "sngm",
        "batch_size": 4096,
        "micro_batch_size": 128,
        "learning_rate": 1.6,
        "weight_decay": 1e-4,
        "lr_schedule": "poly",
        "decay_epochs": [80, 120],
        "epochs": 160,
    }
    assert config_of("--model=resnet20")[0] == table2_sngm
    assert config_of("--model=resnet44", "--dataset=sample", "--learning_rate=0.8")[0] == dict(
        table2_sngm, dataset="sample", learning_rate=0.8
    )
    assert config_of("--model=resnet110", "--optimizer=msgd")[0] == dict(
        table2_sngm, optimizer="msgd", batch_size=128, learning_rate=0.1, lr_schedule="step"
    )
    assert config_of("--model=resnet50", "--optimizer=sngm")[0] == dict(
        table2_sngm, dataset="imagenet2012", batch_size=8192, learning_rate=0.8, epochs=90
    )
    # The two-conv network keeps the demo's defaults (one micro-batch unless asked).
    assert config_of("--model=twoconv")[0] == {
        "dataset": "sample",
        "optimizer": "sngm",
        "batch_size": 500,
        "micro_batch_size": None,
        "learning_rate": 0.2,
        "weight_decay": 5e-4,
        "lr_schedule": "poly",
        "decay_epochs": [80, 120],
        "epochs": 30,
    }
    # A preset's values are the preset's, not the model's.
    assert config_of("--preset=table2_resnet20_msgd_b128")[0]["batch_size"] == 128
    result, stderr = config_of("--model=resnet50", "--optimizer=lars")
    assert result == {"code": 2}
    assert stderr.splitlines() == ["error: --learning_rate: the paper has no lars row for resnet50; give a rate"]
