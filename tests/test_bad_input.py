"""User mistakes across apps.train, apps.tune, apps.reproduce and tools.pytorch_reference: each ends in one line
naming the flag or input as typed, exit code 2, no traceback, and leaves the
output folder as it was. The cases run in-process (tests/app_driver.py, one
process per app), a few that must start their own process after them."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
ENV.pop("TF_CONFIG", None)

# {out}: the case's output folder (--model_dir, --directory); {tmp}: the case's folder.
TRAIN_BASE = [
    "--dataset=sample",
    "--model=twoconv",
    "--epochs=2",
    "--max_updates=1",
    "--verbose=0",
    "--model_dir={out}",
]
REPRODUCE_BASE = [
    "--study=figure1_cpu",
    "--dataset=sample",
    "--epochs_scale=0.1",
    "--max_updates=1",
    "--verbose=0",
    "--output_dir={out}",
]
PYTORCH_REFERENCE_BASE = ["--data={tmp}/two", "--updates=1"]
MODULES = {"pytorch_reference": "tools.pytorch_reference"}  # not an app: run from the repository root
TUNE_BASE = [
    "--dataset=sample",
    "--model=twoconv",
    "--batch_sizes=500",
    "--micro_batch_size=250",
    "--epochs_per_trial=1",
    "--max_trials=1",
    "--verbose=0",
    "--directory={out}",
]

# (app, arguments after the base ones, what the last line starts with after "error: ", setup of {tmp})
CASES = [
    ("train", ["--model=resnet99"], "--model:", None),
    ("train", ["--optimizer=adam"], "--optimizer:", None),
    ("train", ["--learning_rate=0"], "--learning_rate:", None),
    ("train", ["--learning_rate=-1"], "--learning_rate:", None),
    ("train", ["--learning_rate=fast"], "flag --learning_rate=fast", None),
    ("train", ["--learning_rate=inf"], "--learning_rate:", None),
    ("train", ["--learning_rate=nan"], "--learning_rate:", None),
    ("train", ["--weight_decay=inf"], "--weight_decay:", None),
    ("train", ["--weight_decay=-0.1"], "--weight_decay:", None),
    ("train", ["--momentum=1.0"], "--momentum:", None),
    ("train", ["--momentum=-inf"], "--momentum:", None),
    ("train", ["--power=inf"], "--power:", None),
    ("train", ["--epochs=0"], "--epochs:", None),
    ("train", ["--epochs=99999999999"], "--epochs:", None),
    ("train", ["--max_updates=0"], "--max_updates:", None),
    ("train", ["--seed=-1"], "--seed:", None),
    ("train", ["--seed=4294967296"], "--seed:", None),
    ("train", ["--batch_size=99999999999999999999"], "--batch_size:", None),
    ("train", ["--batch_size=500", "--micro_batch_size=300"], "--micro_batch_size:", None),
    ("train", ["--lr_schedule=cosine"], "--lr_schedule:", None),
    ("train", ["--lr_schedule=step", "--epochs=60", "--decay_epochs=50,10"], "--decay_epochs:", None),
    ("train", ["--decay_epochs=a,b", "--lr_schedule=step"], "--decay_epochs:", None),
    ("train", ["--warmup_epochs=40"], "--warmup_epochs:", None),
    # A flag the configuration ignores.
    ("train", ["--lr_schedule=constant", "--power=2"], "--power:", None),
    ("train", ["--decay_factor=5"], "--decay_factor:", None),
    ("train", ["--trust_coefficient=0.01"], "--trust_coefficient:", None),
    ("train", ["--warmup_learning_rate=0.1"], "--warmup_learning_rate:", None),
    ("train", ["--image_size=64"], "--image_size:", None),
    ("train", ["--dataset={tmp}/two", "--data_dir={tmp}"], "--data_dir:", "two_classes"),
    ("train", ["--verbose=3"], "--verbose:", None),
    ("train", ["--verbose=-1"], "--verbose:", None),
    ("train", ["--dtype_policy=float64"], "--dtype_policy:", None),
    ("train", ["--strategy=tpu"], "--strategy:", None),
    ("train", ["--strategy=multi_worker"], "--strategy:", None),
    ("train", ["--num_cpu_devices=100000"], "--num_cpu_devices:", None),
    ("train", ["--eval_every=0"], "--eval_every:", None),
    ("train", ["--checkpoint_every=-5"], "--checkpoint_every:", None),
    ("train", ["--checkpoint_every=0", "--keep_checkpoints=3"], "--keep_checkpoints:", None),
    ("train", ["--keep_checkpoints=0"], "--keep_checkpoints:", None),
    ("train", ["--preset=table9"], "--preset:", None),
    ("train", ["--dataset=/no/such/folder"], "--dataset:", None),
    ("train", ["--dataset={tmp}/one"], "{tmp}/one has one class folder", "one_class"),
    ("train", ["--dataset=cifar10", "--data_dir={tmp}"], "cifar10 not found", None),
    ("train", ["--batch_size=20000"], "batch_size 20000 is larger", None),
    ("train", ["--model_dir={tmp}/notes"], "--model_dir:", "user_files"),
    ("train", ["--model_dir={tmp}/a_file"], "--model_dir:", "a_file"),
    ("train", ["--model_dir={tmp}/a_file/run"], "--model_dir:", "a_file"),
    ("train", ["--model_dir=/proc/sngm-keras-test/run"], "--model_dir:", None),
    ("train", ["stray"], "unexpected arguments", None),
    # --batch_growth: a max below the start, a factor <= 0, one micro-batch an update, no noise scale.
    ("train", ["--batch_growth=sometimes"], "--batch_growth:", None),
    (
        "train",
        ["--batch_growth=noise_scale", "--micro_batch_size=100", "--max_batch_size=400"],
        "--max_batch_size:",
        None,
    ),
    (
        "train",
        ["--batch_growth=noise_scale", "--micro_batch_size=100", "--max_batch_size=1050"],
        "--max_batch_size:",
        None,
    ),
    (
        "train",
        ["--batch_growth=noise_scale", "--micro_batch_size=100", "--max_batch_size=8000"],
        "--max_batch_size:",
        None,
    ),
    (
        "train",
        ["--batch_growth=noise_scale", "--micro_batch_size=100", "--batch_growth_factor=0"],
        "--batch_growth_factor:",
        None,
    ),
    (
        "train",
        ["--batch_growth=noise_scale", "--micro_batch_size=100", "--batch_growth_factor=-2"],
        "--batch_growth_factor:",
        None,
    ),
    ("train", ["--batch_growth=noise_scale"], "--micro_batch_size:", None),
    ("train", ["--batch_growth=noise_scale", "--micro_batch_size=500"], "--micro_batch_size:", None),
    ("train", ["--batch_growth=noise_scale", "--micro_batch_size=100", "--nonoise_scale"], "--noise_scale:", None),
    (
        "train",
        ["--batch_growth=noise_scale", "--micro_batch_size=100", "--lr_batch_scaling=cubic"],
        "--lr_batch_scaling:",
        None,
    ),
    ("train", ["--max_batch_size=1000"], "--max_batch_size:", None),
    ("train", ["--lr_batch_scaling=sqrt"], "--lr_batch_scaling:", None),
    ("tune", ["--tuner=grid"], "--tuner:", None),
    ("tune", ["--max_trials=0"], "--max_trials:", None),
    ("tune", ["--lr_range="], "--lr_range:", None),
    ("tune", ["--lr_range=4,0.1"], "--lr_range:", None),
    ("tune", ["--lr_range=0.1,inf"], "--lr_range:", None),
    ("tune", ["--wd_range=fast,1e-3"], "--wd_range:", None),
    ("tune", ["--momentum_choices=1"], "--momentum_choices:", None),
    ("tune", ["--batch_sizes=0"], "--batch_sizes:", None),
    ("tune", ["--batch_sizes=500", "--micro_batch_size=300"], "--batch_sizes:", None),
    ("tune", ["--batch_sizes=5000"], "--batch_sizes:", None),
    ("tune", ["--epochs_per_trial=0"], "--epochs_per_trial:", None),
    ("tune", ["--epochs_per_trial=99999999999"], "--epochs_per_trial:", None),
    ("tune", ["--final_epochs=0"], "--final_epochs:", None),
    ("tune", ["--objective=test_accuracy"], "--objective:", None),
    ("tune", ["--validation_fraction=1"], "--validation_fraction:", None),
    ("tune", ["--validation_fraction=nan"], "--validation_fraction:", None),
    ("tune", ["--verbose=7"], "--verbose:", None),
    ("tune", ["--seed=-1"], "--seed:", None),
    ("tune", ["--trust_coefficient=0.1"], "--trust_coefficient:", None),
    ("tune", ["--project_name=a/b"], "--project_name:", None),
    ("tune", ["--directory={tmp}/a_file"], "--directory:", "a_file"),
    ("tune", ["--directory=/proc/sngm-keras-test"], "--directory:", None),
    ("tune", ["--dataset=/no/such/folder"], "--dataset:", None),
    ("tune", ["--dataset={tmp}/one"], "{tmp}/one has one class folder", "one_class"),
    ("tune", ["--project_name=p"], "--project_name:", "other_search"),
    ("reproduce", ["--study=adaptive_batch", "--batch_sizes=128"], "--batch_sizes:", None),
    ("reproduce", ["--study=adaptive_batch", "--batch_sizes=64,512"], "--batch_sizes:", None),
    ("reproduce", ["--study=table2", "--fixed_runs_dir=runs"], "--fixed_runs_dir:", None),
    ("reproduce", ["--study=table9"], "--study:", None),
    ("reproduce", ["--lr_grid=a,b"], "--lr_grid:", None),
    ("reproduce", ["--lr_grid=0,1"], "--lr_grid:", None),
    ("reproduce", ["--lr_grid=1,inf"], "--lr_grid:", None),
    ("reproduce", ["--epochs_scale=-1"], "--epochs_scale:", None),
    ("reproduce", ["--epochs_scale=inf"], "--epochs_scale:", None),
    ("reproduce", ["--verbose=7"], "--verbose:", None),
    ("reproduce", ["--max_updates=0"], "--max_updates:", None),
    ("reproduce", ["--num_cpu_devices=-1"], "--num_cpu_devices:", None),
    ("reproduce", ["--strategy=tpu"], "--strategy:", None),
    ("reproduce", ["--data_dir={tmp}"], "--data_dir:", None),
    ("reproduce", ["--dataset=/no/such/folder"], "--dataset:", None),
    ("reproduce", ["--output_dir={tmp}/notes"], "--output_dir:", "user_files"),
    ("reproduce", ["--output_dir={tmp}/a_file"], "--output_dir:", "a_file"),
    ("reproduce", ["--study=table2", "--models=resnet99"], "--models:", None),
    ("reproduce", ["--study=table2", "--rows=sngm_b8192"], "--rows:", None),
    ("reproduce", ["--study=table2", "--rows="], "--rows:", None),
    ("reproduce", ["--study=table2", "--rows=lars_pytorch_b4096"], "--rows:", None),
    ("reproduce", ["--study=table2", "--rows=msgd_b128", "--lr_grid_rows=sngm_b4096"], "--lr_grid_rows:", None),
    ("reproduce", ["--max_extensions=1"], "--max_extensions: no row is swept", None),
    ("reproduce", ["--lr_grid=1,1", "--max_extensions=1"], "--max_extensions: no row is swept", None),
    ("reproduce", ["--max_extensions=-1"], "flag --max_extensions=-1", None),
    ("reproduce", ["--study=batch_scaling", "--rows=msgd_b128"], "--rows:", None),
    ("reproduce", ["--study=batch_scaling", "--lr_grid_rows=msgd_b128"], "--lr_grid_rows:", None),
    ("reproduce", ["--study=batch_scaling", "--methods=adam"], "--methods:", None),
    ("reproduce", ["--study=batch_scaling", "--batch_sizes=100,x"], "--batch_sizes:", None),
    ("reproduce", ["stray"], "unexpected arguments", None),
    ("pytorch_reference", ["--data={tmp}/one"], "--data: {tmp}/one has one class folder", "one_class"),
    ("pytorch_reference", ["--data=/no/such/folder"], "--data:", None),
    ("pytorch_reference", ["--micro_batch_size=100"], "--micro_batch_size:", "two_classes"),
    ("pytorch_reference", ["--learning_rate=0"], "--learning_rate:", "two_classes"),
    ("pytorch_reference", ["--momentum=1"], "--momentum:", "two_classes"),
    ("pytorch_reference", ["--optimizer=adam"], "flag --optimizer=adam", "two_classes"),
    ("pytorch_reference", ["--output={tmp}/two/train/cat/0.png"], "--output:", "two_classes"),
]
# Commands that are right: a dry run writes nothing either.
DRY_RUNS = [
    ["--study=figure1_cpu", "--dataset=sample", "--epochs_scale=0.1", "--dry_run", "--output_dir={out}"],
    ["--study=batch_scaling", "--dataset=sample", "--dry_run", "--output_dir={out}"],
    ["--study=adaptive_batch", "--dataset=sample", "--dry_run", "--output_dir={out}"],
]


def _image_folder(root, classes):
    for split in ("train", "test"):
        for c in classes:
            os.makedirs(os.path.join(root, split, c))
            for i in range(2):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(os.path.join(root, split, c, f"{i}.png"))


def setup(kind, tmp):
    if kind == "one_class":
        _image_folder(os.path.join(tmp, "one"), ["cat"])
    elif kind == "two_classes":
        _image_folder(os.path.join(tmp, "two"), ["cat", "dog"])
    elif kind == "user_files":
        os.makedirs(os.path.join(tmp, "notes", "drafts"))
        with open(os.path.join(tmp, "notes", "thesis.txt"), "w") as f:
            f.write("mine\n")
    elif kind == "a_file":
        with open(os.path.join(tmp, "a_file"), "w") as f:
            f.write("not a folder\n")
    elif kind == "other_search":
        os.makedirs(os.path.join(tmp, "out", "p"))
        with open(os.path.join(tmp, "out", "p", "search.json"), "w") as f:
            json.dump({"tuner": "bayesian"}, f)


def snapshot(folder):
    """Every path under `folder` with a hash of its content."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), folder)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def run_in_process(module, argument_lists, results_path):
    """Runs `module`'s main once per argument list in one process."""
    stdin = "".join(json.dumps(args) + "\n" for args in argument_lists)
    result = subprocess.run(
        [sys.executable, "-m", "tests.app_driver", module, results_path],
        input=stdin,
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(results_path) as f:
        return [json.loads(line) for line in f]


def check_refused(result, expected, what):
    assert result["code"] == 2, (what, result)
    assert "Traceback" not in result["stderr"], (what, result["stderr"][-3000:])
    last = result["stderr"].strip().splitlines()[-1]
    assert last.startswith(f"error: {expected}"), (what, last)


def test_mistakes_end_in_one_line_and_write_nothing(tmp_path):
    assert len(CASES) >= 40
    bases = {
        "train": TRAIN_BASE,
        "tune": TUNE_BASE,
        "reproduce": REPRODUCE_BASE,
        "pytorch_reference": PYTORCH_REFERENCE_BASE,
    }
    by_app = {app: [] for app in bases}
    cases = CASES + [("reproduce", args, None, None) for args in DRY_RUNS]
    for i, (app, args, expected, kind) in enumerate(cases):
        tmp = str(tmp_path / f"case{i}")
        os.makedirs(tmp)
        setup(kind, tmp)
        base = bases[app] if expected else []
        full = [a.format(out=os.path.join(tmp, "out"), tmp=tmp) for a in base + args]
        by_app[app].append((full, expected and expected.format(tmp=tmp), tmp, snapshot(tmp)))
    for app, app_cases in by_app.items():
        module = MODULES.get(app, f"apps.{app}")
        results = run_in_process(module, [c[0] for c in app_cases], str(tmp_path / f"{app}.jsonl"))
        assert len(results) == len(app_cases)
        for (args, expected, tmp, before), result in zip(app_cases, results):
            if expected is None:
                assert result["code"] == 0 and "to run" in result["stdout"], (args, result)
            else:
                check_refused(result, expected, args)
            assert snapshot(tmp) == before, (args, "the output folder changed")


def run_app(module, *args, env=None, wait=True):
    command = [sys.executable, "-m", module, *args]
    if not wait:
        # A shell's background job (`pytest ... &`) ignores SIGINT, and a
        # child inherits that: restored here so the Ctrl-C test means Ctrl-C.
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=env or ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    return subprocess.run(command, cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "name, flag",
    [
        *((name, "repeats") for name in ("bench_accumulation", "bench_app_batches", "bench_batch_shape")),
        *((name, "repeats") for name in ("bench_optimizer", "bench_train", "bench_checkpoints", "bench_folder_input")),
        ("bench_stop_agreement", "calls"),
        ("bench_flag_errors", "repeats"),
    ],
)
def test_a_benchmarks_flag_mistake_is_one_line_from_the_repository_root(name, flag):
    result = run_app(f"benchmarks.{name}", f"--{flag}=x")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    expected = f"error: flag --{flag}=x: invalid literal for int() with base 10: 'x'"
    assert result.stderr.strip().splitlines() == [expected]


@pytest.mark.parametrize("module", ["apps.train", "apps.tune", "apps.reproduce"])
def test_unknown_keras_backend_is_one_line(tmp_path, module):
    result = run_app(module, env=dict(ENV, KERAS_BACKEND="tensorflw"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: KERAS_BACKEND=tensorflw: unknown backend; use one of tensorflow, jax, torch, numpy, openvino"
    ]


def test_replica_error_names_the_flag_given_before_writing(tmp_path):
    # 500 images a batch do not split over 3 replicas; no --micro_batch_size was given.
    out = tmp_path / "run"
    result = run_app(
        "apps.train",
        "--dataset=sample",
        "--model=twoconv",
        "--num_cpu_devices=3",
        "--strategy=mirrored",
        "--epochs=1",
        f"--model_dir={out}",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: --batch_size: 500 does not split evenly over 3")
    assert not out.exists()


def test_ctrl_c_stops_in_one_line_and_leaves_a_resumable_run(tmp_path):
    out = str(tmp_path / "run")
    args = [
        "--dataset=sample",
        "--model=twoconv",
        "--batch_size=500",
        "--micro_batch_size=250",
        "--epochs=30",
        "--verbose=0",
        f"--model_dir={out}",
    ]
    process = run_app("apps.train", *args, wait=False)
    state = os.path.join(out, "checkpoints", "state.json")
    deadline = time.time() + 240
    while not os.path.exists(state):
        assert process.poll() is None and time.time() < deadline, process.stderr.read()[-3000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    # The update in flight finished and was checkpointed where it stopped.
    stopped = json.load(open(state))
    where = (
        f"epoch {stopped['epoch'] + 1}, batch {stopped['batch']} of 10"
        if stopped.get("batch")
        else f"the end of epoch {stopped['epoch']}"
    )
    assert err.strip().splitlines()[-1] == (
        f"stopped: SIGINT: checkpointed at update {stopped['updates']} ({where}) in {out}; rerun the same "
        "command to resume there"
    )
    assert stopped["epoch"] >= 1 and not os.path.exists(os.path.join(out, "summary.json"))
    # The same command resumes it (here stopped again right away by --max_updates).
    resumed = run_app("apps.train", *args, f"--max_updates={stopped['updates'] + 1}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {stopped['weights']}" in resumed.stderr and "stopped at --max_updates" in resumed.stdout


def test_ctrl_c_before_training_stops_at_once(tmp_path):
    out = tmp_path / "run"
    process = run_app("apps.train", "--dataset=sample", "--verbose=0", f"--model_dir={out}", wait=False)
    time.sleep(1.0)  # the flags are checked; TensorFlow is loading
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == "stopped: interrupted before the run started; nothing was written"
    assert not out.exists()


def test_a_study_whose_first_run_is_refused_leaves_nothing(tmp_path):
    # The data is found missing by the first run's apps.train, after this
    # command wrote study.json and the run's flagfile: both are removed.
    out = tmp_path / "study"
    result = run_app(
        "apps.reproduce",
        "--study=figure1_cpu",
        "--dataset=cifar10",
        f"--data_dir={tmp_path}",
        "--epochs_scale=0.1",
        "--max_updates=1",
        "--verbose=0",
        f"--output_dir={out}",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: run twoconv_msgd_b128: cifar10 not found in"), last
    assert not out.exists()
