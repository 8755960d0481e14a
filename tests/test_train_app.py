"""The training app end to end: outputs, presets, resume after SIGKILL, bad input."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from sngm_keras.training import PRESETS, ConfigError, TrainConfig, train

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


def test_sample_run_writes_every_output(tmp_path):
    model_dir = str(tmp_path / "run")
    result = app(*TINY, "--epochs=2", "--learning_rate=0.3", f"--model_dir={model_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "run finished: test accuracy" in result.stdout
    for name in ("config.json", "history.csv", "summary.json", "curves.png", "final.keras", "logs", "checkpoints"):
        assert os.path.exists(os.path.join(model_dir, name)), name
    summary = json.load(open(os.path.join(model_dir, "summary.json")))
    for key in ("test_accuracy", "best_test_accuracy", "train_loss", "updates", "examples_per_second",
                "wall_seconds", "backend"):
        assert summary[key] is not None, key
    assert summary["updates"] == 20 and summary["backend"] == "tensorflow"
    assert summary["flags"]["learning_rate"] == 0.3 and summary["flags"]["micro_batch_size"] == 250
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["best_test_accuracy"] >= summary["test_accuracy"]
    rows = history(model_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [int(r["updates"]) for r in rows] == [10, 20]
    assert [float(r["grad_per_n"]) for r in rows] == [1.0, 2.0]
    assert float(rows[-1]["learning_rate"]) == pytest.approx(0.0, abs=1e-7)  # poly decays to 0 at the end
    assert float(rows[0]["learning_rate"]) == pytest.approx(0.3 * 0.5**1.1, rel=1e-5)
    model = keras.models.load_model(os.path.join(model_dir, "final.keras"))
    assert model.output_shape == (None, 10)

    # The same command again finds the finished run and trains nothing.
    again = app(*TINY, "--epochs=2", "--learning_rate=0.3", f"--model_dir={model_dir}")
    assert again.returncode == 0 and "was already complete" in again.stdout

    # Another configuration may not write into this folder.
    before = open(os.path.join(model_dir, "summary.json")).read()
    other = app(*TINY, "--epochs=2", "--learning_rate=0.1", f"--model_dir={model_dir}")
    assert other.returncode == 2
    assert other.stderr.strip().splitlines()[-1].startswith("error: --model_dir:")
    assert "learning_rate" in other.stderr
    assert open(os.path.join(model_dir, "summary.json")).read() == before


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


def test_kill_and_resume_is_exact_with_deterministic(tmp_path):
    args = [*TINY, "--epochs=4", "--deterministic"]
    straight = str(tmp_path / "straight")
    assert app(*args, f"--model_dir={straight}").returncode == 0

    resumed = str(tmp_path / "resumed")
    process = app(*args, f"--model_dir={resumed}", wait=False)
    wait_for_epoch(resumed, 1, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_state = json.load(open(os.path.join(resumed, "checkpoints", "state.json")))
    killed_at = killed_state["epoch"]
    assert 1 <= killed_at < 4
    assert not os.path.exists(os.path.join(resumed, "summary.json"))

    result = app(*args, f"--model_dir={resumed}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"(epoch {killed_at})" in result.stderr  # it resumed, not restarted
    rows = history(resumed)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [int(r["updates"]) for r in rows] == [10, 20, 30, 40]
    summary = json.load(open(os.path.join(resumed, "summary.json")))
    assert summary["updates"] == 40
    assert summary["started_utc"] == killed_state["started_utc"]  # the run's first start, kept across the resume
    for a, b in zip(final_weights(resumed), final_weights(straight)):
        np.testing.assert_array_equal(a, b)
    # Resumed test accuracies are those of the uninterrupted run.
    assert [r["test_accuracy"] for r in rows] == [r["test_accuracy"] for r in history(straight)]


def test_every_preset_is_a_valid_configuration(tmp_path):
    assert len(PRESETS) == 1 + 12 + 4 + 4
    for name in PRESETS:
        config = TrainConfig.from_preset(name, model_dir=str(tmp_path / name)).validate()
        assert config.preset == name
    sngm = TrainConfig.from_preset("table2_resnet20_sngm_b4096", model_dir=str(tmp_path))
    assert (sngm.model, sngm.optimizer, sngm.batch_size, sngm.micro_batch_size) == ("resnet20", "sngm", 4096, 128)
    assert (sngm.learning_rate, sngm.power, sngm.weight_decay, sngm.epochs, sngm.warmup_epochs) == (1.6, 1.1, 1e-4, 160, 0)
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
        dataset=dataset, model=model, optimizer="sngm", batch_size=16, micro_batch_size=8, learning_rate=0.1,
        epochs=1, max_updates=2, eval_batch_size=16, verbose=0, model_dir=str(tmp_path / "run"), **extra,
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
    result = app(*TINY, "--epochs=1", "--max_updates=2", "--num_cpu_devices=2", "--strategy=mirrored",
                 f"--model_dir={model_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.load(open(os.path.join(model_dir, "summary.json")))
    assert summary["replicas"] == 2 and summary["updates"] == 2 and summary["micro_batch_size"] == 250


BAD_INPUTS = [
    (["--model=resnet99"], "--model"),
    (["--optimizer=adam"], "--optimizer"),
    (["--learning_rate=0"], "--learning_rate"),
    (["--learning_rate=-1"], "--learning_rate"),
    (["--learning_rate=fast"], "--learning_rate"),
    (["--momentum=1.0"], "--momentum"),
    (["--weight_decay=-0.1"], "--weight_decay"),
    (["--epochs=0"], "--epochs"),
    (["--batch_size=500", "--micro_batch_size=300"], "--micro_batch_size"),
    (["--lr_schedule=cosine"], "--lr_schedule"),
    (["--lr_schedule=step", "--decay_epochs=50,10"], "--decay_epochs"),
    (["--warmup_epochs=40"], "--warmup_epochs"),
    (["--preset=table9"], "--preset"),
    (["--dataset=/no/such/folder"], "--dataset"),
    (["--dataset=cifar10", "--nodownload", "--data_dir={tmp}"], "cifar10 not found"),
    (["--model_dir=/proc/sngm-keras-test"], "--model_dir"),
    (["--model_dir={file}"], "--model_dir"),
    (["--batch_size=20000"], "batch"),
    (["--strategy=multi_worker"], "--strategy"),
    (["stray"], "unexpected arguments"),
]


def test_bad_input_ends_in_one_line(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    processes = []
    for i, (args, expected) in enumerate(BAD_INPUTS):
        args = [a.format(tmp=tmp_path, file=a_file) for a in args]
        if not any(a.startswith("--model_dir") for a in args):
            args.append(f"--model_dir={tmp_path / f'run{i}'}")
        processes.append((args, expected, app(*args, wait=False)))
        if len(processes) % 4 == 0:  # a few at a time on 2 cores
            processes[-4][2].wait()
    for args, expected, process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 2, (args, err[-2000:])
        assert "Traceback" not in err, (args, err[-2000:])
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and expected in last, (args, last)
        assert not os.path.exists(tmp_path / "run0" / "history.csv")
