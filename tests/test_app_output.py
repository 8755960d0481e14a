"""What the apps print and report: no TensorFlow native log by default, one
line per epoch when the output is not a terminal, and summary.json and
curves.png fit for a report."""

import datetime
import io
import json
import os
import re
import subprocess
import sys

import pytest

import sngm_keras
from apps import _startup
from sngm_keras.training import ConfigError, TrainConfig
from sngm_keras.training.config_checks import keras_verbosity
from sngm_keras.training.curves import curves_figure, noise_scale_figure
from sngm_keras.training.outputs import curves_title, noise_scale_title

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TensorFlow's C++ log lines ("I0000 00:00:... port.cc:153] oneDNN ..."), and absl's note before them.
NATIVE_LOG = re.compile(r"^[IWEF]\d{4} .*\.cc:\d+\]|InitializeLog|cuInit")


def environment_without_log_level():
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def start(app, *args):
    return subprocess.Popen(
        [sys.executable, "-m", f"apps.{app}", *args],
        cwd=ROOT,
        env=environment_without_log_level(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_bad_flag_is_the_only_line_on_stderr(tmp_path):
    processes = [
        start("train", "--verbose=3", f"--model_dir={tmp_path / 'train'}"),
        start("reproduce", "--study=figure1_cpu", "--verbose=-1", f"--output_dir={tmp_path / 'study'}"),
        start("tune", "--verbose=9", f"--directory={tmp_path / 'tune'}"),
    ]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 2, err[-2000:]
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "--verbose" in lines[0], err[-2000:]
    assert not os.listdir(tmp_path)


def test_native_log_shown_only_with_verbosity():
    for argv in (["train", "-v", "1"], ["train", "--verbosity=2"], ["train", "-v=1", "--model=x"]):
        env = {"TF_CPP_MIN_LOG_LEVEL": "0"}
        assert not _startup.quiet_tensorflow_start(argv, env) and env == {"TF_CPP_MIN_LOG_LEVEL": "0"}, argv
    for argv in (["train"], ["train", "--verbosity=0"], ["train", "--verbose=2"], ["train", "-v"]):
        for env in ({}, {"TF_CPP_MIN_LOG_LEVEL": "1"}, {"TF_CPP_MIN_LOG_LEVEL": "3"}):
            # A level the user set does not bring TensorFlow's log back: TensorFlow
            # ignores it for its load-time lines, which only the quiet start hides.
            assert _startup.quiet_tensorflow_start(argv, env) and env == {"TF_CPP_MIN_LOG_LEVEL": "3"}, argv


def test_verbosity_follows_the_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert keras_verbosity(None) == 2 and keras_verbosity(0) == 0 and keras_verbosity(1) == 1
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert keras_verbosity(None) == 1 and keras_verbosity(2) == 2
    for bad in (3, -1, True, "2"):
        with pytest.raises(ConfigError, match="^--verbose: "):
            TrainConfig(verbose=bad, model_dir="unused").validate()


def git_head():
    try:
        result = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def test_run_to_a_file_prints_lines_per_epoch_and_reports_its_provenance(tmp_path):
    model_dir = tmp_path / "run"
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    process = start(
        "train",
        "--dataset=sample",
        "--model=twoconv",
        "--batch_size=500",
        "--micro_batch_size=250",
        "--epochs=2",
        f"--model_dir={model_dir}",
    )
    out, err = process.communicate(timeout=600)
    after = datetime.datetime.now(datetime.timezone.utc)
    assert process.returncode == 0, err[-3000:]
    assert not [line for line in err.splitlines() if NATIVE_LOG.search(line)], err[-3000:]
    assert not re.search(r"[\x08\r\x1b]", out), repr(out[-500:])  # no progress-bar control codes
    assert [line for line in out.splitlines() if line.startswith("Epoch ")] == ["Epoch 1/2", "Epoch 2/2"]
    # Epoch, its one line of figures, twice, the result and the noise scale
    assert len(out.splitlines()) == 6, out

    summary = json.loads((model_dir / "summary.json").read_text())
    started = datetime.datetime.fromisoformat(summary["started_utc"].replace("Z", "+00:00"))
    finished = datetime.datetime.fromisoformat(summary["finished_utc"].replace("Z", "+00:00"))
    assert summary["started_utc"].endswith("Z") and before <= started <= finished <= after
    assert summary["sngm_keras"] == sngm_keras.__version__
    assert summary["flags"]["verbose"] is None
    head = git_head()
    if head is None:
        pytest.skip("not a git checkout: the run's commit cannot be checked")
    assert re.fullmatch(r"[0-9a-f]{40}", head) and summary["git"]["commit"] == head


def test_curves_title_axis_and_log_ticks(tmp_path):
    config = TrainConfig(model="twoconv", optimizer="sngm", batch_size=500, learning_rate=0.2)
    rows = [{"grad_per_n": e, "train_loss": 2.3 - 0.1 * e, "test_accuracy": 0.1 + 0.05 * e} for e in range(1, 8)]
    fig = curves_figure({curves_title(config): {"SNGM, B=500": rows}})
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_title() == "twoconv on sample\nSNGM, B = 500, learning rate 0.2"
    assert loss_ax.get_xlabel() == acc_ax.get_xlabel() == "epochs (#grad/n)"
    fig.canvas.draw()
    labels = [t.get_text() for minor in (False, True) for t in loss_ax.get_yticklabels(minor=minor)]
    shown = [float(text) for text in labels if text]  # plain numbers, no 2×10⁰
    assert 1.6 in shown and 2 in shown, labels
    preset = TrainConfig.from_preset("table2_resnet20_sngm_b4096")
    assert curves_title(preset) == "table2_resnet20_sngm_b4096\nresnet20 on cifar10\nSNGM, B = 4096, learning rate 1.6"
    folder = TrainConfig(model="resnet20", optimizer="msgd", batch_size=128, dataset="/data/flowers/")
    assert curves_title(folder) == "resnet20 on flowers\nMSGD, B = 128, learning rate 0.2"
    assert noise_scale_title(folder) == "Gradient noise scale\nresnet20 on flowers, MSGD"


@pytest.mark.parametrize(
    "start,growth,labels",
    [
        (45, 1.5, ["50", "100", "200", "500", "1000", "2000", "5000"]),  # to 1730: 2 decades with B = 4096
        (60, 2.0, ["100", "1000", "10000"]),  # to 30720: more than 2.5 decades
        (1000, 1.2, ["1000", "2000", "3000", "5000"]),  # to 5160: under a decade and a half
        (3030, 1.01, ["3000", "4000", "5000"]),  # to 3314: under half a decade
    ],
)
def test_noise_scale_plot_holds_the_batch_line_inside_and_few_labels(start, growth, labels):
    rows = [{"grad_per_n": e + 1, "gradient_noise_scale": start * growth**e} for e in range(10)]
    ax = noise_scale_figure(rows, 4096, "t").axes[0]
    low, high = ax.get_ylim()
    scales = [r["gradient_noise_scale"] for r in rows] + [4096]
    assert low < min(scales) / 1.2 and high > max(scales) * 1.2  # the batch's line too, never on the edge
    ax.figure.canvas.draw()
    shown = [t.get_text() for t in ax.get_yticklabels() if low <= t.get_position()[1] <= high and t.get_text()]
    assert shown == labels
