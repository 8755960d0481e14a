"""`apps.train --strategy=multi_worker` end to end, on 127.0.0.1.

TensorFlow: two worker processes (TF_CONFIG), one SIGKILLed after the first
checkpoint, the other ending with one line, and the same commands again
resuming to the weights of one uninterrupted process with the same global
batch. JAX: two processes (keras.distribution.initialize,
gloo) against one. Bad cluster descriptions end in one line. Every worker
gets its own --model_dir and TMPDIR, so the test sees what each one leaves.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from sngm_keras.training import ConfigError, TrainConfig, cluster, membership

pytestmark = [pytest.mark.multiworker, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 5000 sample images, B = 1000: 5 updates an epoch; micro-batches of 250
# per replica (two per worker with two workers, four on one process).
RUN = ["--dataset=sample", "--batch_size=1000", "--micro_batch_size=250", "--learning_rate=0.5", "--verbose=0"]
TIMEOUT = 900  # seconds for any one command of this file (generous: a loaded 2-core machine)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, env=None, tmp=None):
    env = dict(
        {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "XLA_FLAGS")},
        TF_CPP_MIN_LOG_LEVEL="2",
        **(env or {}),
    )
    if tmp is not None:
        os.makedirs(tmp, exist_ok=True)
        env["TMPDIR"] = str(tmp)
    return subprocess.Popen(
        [sys.executable, "-m", "apps.train", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(processes, timeout=TIMEOUT):
    """Waits for all; kills the rest if one outlives the deadline. Returns
    (returncode, stdout, stderr) of each."""
    deadline = time.time() + timeout
    results = []
    try:
        for p in processes:
            out, err = p.communicate(timeout=max(1, deadline - time.time()))
            results.append((p.returncode, out, err))
    except subprocess.TimeoutExpired as timeout:
        tails = [err[-1500:] for _, _, err in results]
        for p in processes[len(results) :]:
            p.kill()
            tails.append(p.communicate()[1][-1500:])
        raise AssertionError(
            "a worker outlived the deadline; their stderr ends:\n" + "\n---\n".join(tails)
        ) from timeout
    return results


def tf_workers(tmp_path, name, args, count=2):
    ports = [free_port() for _ in range(count)]
    processes = []
    for index in range(count):
        tf_config = json.dumps(
            {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
        )
        folder = tmp_path / name / f"worker{index}"
        processes.append(
            start(
                [*args, "--strategy=multi_worker", f"--model_dir={folder}"],
                env={"TF_CONFIG": tf_config},
                tmp=tmp_path / name / f"tmp{index}",
            )
        )
    return processes


def jax_workers(tmp_path, name, args, count=2):
    port = free_port()
    env = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    return [
        start(
            [
                *args,
                "--strategy=multi_worker",
                f"--coordinator_address=127.0.0.1:{port}",
                f"--num_processes={count}",
                f"--process_id={index}",
                f"--model_dir={tmp_path / name / f'worker{index}'}",
            ],
            env=env,
            tmp=tmp_path / name / f"tmp{index}",
        )
        for index in range(count)
    ]


def succeeded(results):
    for code, out, err in results:
        assert code == 0, err[-3000:]
        # TensorFlow's collective-ops INFO lines show only with --verbosity.
        noise = [line for line in (out + err).splitlines() if "INFO:tensorflow" in line or "ollective" in line]
        noise += [line for line in err.splitlines() if "distributed service" in line]  # JAX's runtime starting
        assert not noise, noise[:3]
    assert "test accuracy" in results[0][1] and "the results are in the chief's --model_dir" in results[1][1]


def worker_folders(folder, count=2):
    """The temporary run folders of the workers that are not the chief."""
    return sorted(n for i in range(count) for n in os.listdir(folder / f"tmp{i}") if n.startswith("sngm-worker"))


def only_the_chief_wrote(folder, left_by_a_kill=(), count=2):
    assert os.path.exists(folder / "worker0" / "summary.json")
    for index in range(1, count):
        assert not os.path.exists(folder / f"worker{index}")  # never created
    assert worker_folders(folder, count) == list(left_by_a_kill)  # removed, unless SIGKILLed


def weights(model_dir):
    return keras.models.load_model(os.path.join(model_dir, "final.keras")).get_weights()


def max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def test_tensorflow_two_workers_killed_resume_to_the_single_process_weights(tmp_path):
    """Two workers, one SIGKILLed after the chief's first checkpoint; the
    survivor stops with one line; the same commands again resume and end
    with the weights of one uninterrupted process with the same global batch
    and two replicas (two logical CPUs: the same sums, so equal to the bit;
    its agreement with one replica is test_accumulation's)."""
    args = [*RUN, "--epochs=2", "--deterministic"]
    single = start([*args, "--strategy=mirrored", "--num_cpu_devices=2", f"--model_dir={tmp_path / 'single'}"])
    chief, other = tf_workers(tmp_path, "run", args)
    state = tmp_path / "run" / "worker0" / "checkpoints" / "state.json"
    deadline = time.time() + TIMEOUT
    while not state.exists() and chief.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    other.send_signal(signal.SIGKILL)
    killed_at = time.time()
    code, _, err = finish([chief, other])[0]
    assert time.time() - killed_at < 120  # TensorFlow's heartbeats found the lost worker
    assert code == 1 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("error: the cluster lost a worker"), err[-2000:]
    assert json.load(open(state))["epoch"] == 1
    assert not (tmp_path / "run" / "worker0" / "summary.json").exists()
    left_by_the_kill = worker_folders(tmp_path / "run")

    results = finish(tf_workers(tmp_path, "run", args))
    succeeded(results)
    # Both resumed from the chief's checkpoint (worker 1 from its copy).
    assert all("resumed from epoch-0001.weights.h5 (epoch 1)" in err for _, _, err in results)
    assert finish([single])[0][0] == 0
    chief_dir = tmp_path / "run" / "worker0"
    summary = json.load(open(chief_dir / "summary.json"))
    assert summary["replicas"] == 2 and summary["updates"] == 10 and summary["micro_batch_size"] == 250
    for a, b in zip(weights(chief_dir), weights(tmp_path / "single")):
        np.testing.assert_array_equal(a, b)
    only_the_chief_wrote(tmp_path / "run", left_by_the_kill)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_sigterm_to_one_worker_stops_both_at_one_update_and_the_pair_resumes(tmp_path, backend):
    """SIGTERM to worker 1 within an epoch: both workers checkpoint the same
    update and exit 143, each with one line; the same commands again end
    with the weights of the pair that was never stopped."""
    args = [*RUN, "--epochs=3", "--deterministic"]
    workers = tf_workers if backend == "tensorflow" else jax_workers
    whole = workers(tmp_path, "whole", args)
    assert [code for code, _, _ in finish(whole)] == [0, 0]
    chief, other = workers(tmp_path, "run", args)
    history = tmp_path / "run" / "worker0" / "history.csv"
    deadline = time.time() + TIMEOUT
    while not history.exists() and chief.poll() is None and time.time() < deadline:  # in the second epoch
        time.sleep(0.05)
    other.send_signal(signal.SIGTERM)
    results = finish([chief, other])
    assert [code for code, _, _ in results] == [143, 143], results[0][2][-2000:] + results[1][2][-2000:]
    state = json.load(open(tmp_path / "run" / "worker0" / "checkpoints" / "state.json"))
    assert 5 <= state["updates"] < 15
    if state.get("batch"):
        where = f"update {state['updates']} (epoch {state['epoch'] + 1}, batch {state['batch']} of 5)"
    else:
        where = f"update {state['updates']} (the end of epoch {state['epoch']})"
    folder = tmp_path / "run" / "worker"
    lines = [err.strip().splitlines() for _, _, err in results]
    assert lines[0] == [
        f"stopped: SIGTERM to worker 1: checkpointed at {where} in {folder}0; rerun the same command to resume there"
    ]
    assert lines[1] == [
        f"stopped: SIGTERM: checkpointed at {where} in the chief's --model_dir; rerun the same command to resume there"
    ]

    results = finish(workers(tmp_path, "run", args))
    succeeded(results)
    for a, b in zip(weights(tmp_path / "run" / "worker0"), weights(tmp_path / "whole" / "worker0"), strict=True):
        np.testing.assert_array_equal(a, b)
    only_the_chief_wrote(tmp_path / "run")


def test_jax_two_processes_equal_one(tmp_path):
    args = [*RUN, "--epochs=1", "--max_updates=2", "--eval_batch_size=500"]
    single = start(
        [*args, "--micro_batch_size=500", f"--model_dir={tmp_path / 'single'}"],
        env={"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"},
    )
    results = finish(jax_workers(tmp_path, "two", args))
    succeeded(results)
    assert finish([single])[0][0] == 0
    only_the_chief_wrote(tmp_path / "two")
    chief = tmp_path / "two" / "worker0"
    summary = json.load(open(chief / "summary.json"))
    assert summary["backend"] == "jax" and summary["replicas"] == 2 and len(summary["devices"]) == 2
    assert summary["updates"] == 2
    assert max_diff(weights(chief), weights(tmp_path / "single")) < 1e-5


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_workers_grow_the_batch_alike_and_equal_one_process(tmp_path, backend):
    """--batch_growth from B = 1000 to at most 2000 (a factor so large that
    the first measure asks for the maximum): both workers train epoch 2 at
    2000 (a worker at another batch would break the next all-reduce), to
    the weights of one process: on TensorFlow one process with two logical
    CPUs (the same sums: equal to the bit), on JAX one device (the sums in
    another order)."""
    growth = ["--batch_growth=noise_scale", "--batch_growth_factor=10000", "--max_batch_size=2000", "--epochs=2"]
    args = [*RUN, *growth, "--eval_batch_size=500"]
    if backend == "tensorflow":
        args.append("--deterministic")
        single_args = ["--strategy=mirrored", "--num_cpu_devices=2"]
        env = None
    else:
        single_args = ["--micro_batch_size=500"]  # the two workers' micro-batches of 250 side by side
        env = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    single = start([*args, *single_args, f"--model_dir={tmp_path / 'single'}"], env=env)
    workers = tf_workers if backend == "tensorflow" else jax_workers
    results = finish(workers(tmp_path, "two", args))
    succeeded(results)
    assert finish([single])[0][0] == 0
    assert "batches grown by the gradient noise scale: 1000 (epoch 1), 2000 (epoch 2)" in results[0][1]
    chief = tmp_path / "two" / "worker0"
    summary = json.load(open(chief / "summary.json"))
    assert summary["epoch_batch_sizes"] == [1000, 2000] and summary["updates"] == 5 + 3
    assert json.load(open(tmp_path / "single" / "summary.json"))["epoch_batch_sizes"] == [1000, 2000]
    if backend == "tensorflow":
        for a, b in zip(weights(chief), weights(tmp_path / "single"), strict=True):
            np.testing.assert_array_equal(a, b)
    else:
        # 8 SNGM updates of rate 0.5 summed in another order: 2.7e-4 apart where
        # measured. Training epoch 2 at B = 1000 instead (10 updates) moves them by 0.016.
        assert max_diff(weights(chief), weights(tmp_path / "single")) < 1e-3


# -------------------------------------------------------- cluster descriptions


def tf_config(index=0, workers=2, **extra):
    return json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{2000 + i}" for i in range(workers)]},
            "task": {"type": "worker", "index": index},
            **extra,
        }
    )


def describe(tf_config_text=None, backend="tensorflow", **fields):
    config = TrainConfig(strategy="multi_worker", **fields)
    environ = {} if tf_config_text is None else {"TF_CONFIG": tf_config_text}
    return cluster.describe(config, backend, environ)


def test_cluster_descriptions():
    assert describe(tf_config(0)) == cluster.Cluster(num_workers=2, index=0, is_chief=True)
    assert describe(tf_config(1)) == cluster.Cluster(num_workers=2, index=1, is_chief=False)
    with_chief = json.dumps(
        {"cluster": {"chief": ["h:1"], "worker": ["h:2", "h:3"]}, "task": {"type": "worker", "index": 0}}
    )
    assert describe(with_chief) == cluster.Cluster(num_workers=3, index=1, is_chief=False)
    jax = describe(backend="jax", coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1)
    assert jax == cluster.Cluster(2, 1, False, "127.0.0.1:1234")
    from_env = cluster.describe(
        TrainConfig(strategy="multi_worker"),
        "jax",
        {
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:99,10.0.0.2:99",
            "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
            "KERAS_DISTRIBUTION_PROCESS_ID": "0",
        },
    )
    assert from_env == cluster.Cluster(2, 0, True, "10.0.0.1:99")
    # Other strategies ignore TF_CONFIG, however malformed.
    assert cluster.describe(TrainConfig(), "tensorflow", {"TF_CONFIG": "{not json"}) is None

    for text, expected in [
        (None, "needs the cluster in the TF_CONFIG"),
        ("{not json", "TF_CONFIG is not valid JSON"),
        (tf_config(2), "task index 2 is out of range"),
        (tf_config(-1), "task index -1 is out of range"),
        (json.dumps({"cluster": {"worker": ["h:1"]}, "task": {"type": "ps", "index": 0}}), "task type 'ps'"),
        (json.dumps({"cluster": {"worker": ["h:1"], "ps": ["h:2"]}, "task": {"type": "worker"}}), "'ps' job"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), "no 'cluster'"),
    ]:
        with pytest.raises(ConfigError, match="--strategy") as raised:
            describe(text)
        assert expected in str(raised.value), (text, str(raised.value))
    for fields, flag, expected in [
        ({}, "--strategy", "needs --coordinator_address, --num_processes, --process_id"),
        (dict(coordinator_address="h:1", num_processes=2, process_id=2), "--process_id", "must be in 0..1"),
        (dict(coordinator_address="nohost", num_processes=2, process_id=0), "--coordinator_address", "host:port"),
    ]:
        with pytest.raises(ConfigError, match=flag) as raised:
            describe(backend="jax", **fields)
        assert expected in str(raised.value)


def test_checkpoint_bytes_survive_the_float64_broadcast():
    for size in (0, 1, 3, 4, 5, 1001):
        data = os.urandom(size)
        assert membership._from_words(membership._to_words(data).astype(np.float64)) == data


def test_malformed_tf_config_is_ignored_without_multi_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    TrainConfig(model_dir=str(tmp_path / "run")).validate()
    with pytest.raises(ConfigError, match="--process_id: applies to --strategy=multi_worker on the jax"):
        TrainConfig(process_id=0, model_dir=str(tmp_path / "run")).validate()


BAD_CLUSTERS = [
    ({"TF_CONFIG": "{not json"}, [], "TF_CONFIG is not valid JSON"),
    ({"TF_CONFIG": tf_config(5)}, [], "task index 5 is out of range"),
    ({}, [], "needs the cluster in the TF_CONFIG"),
    ({"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}, ["--num_processes=2"], "needs --coordinator_address"),
]


def test_bad_cluster_descriptions_end_in_one_line(tmp_path):
    processes = []
    for i, (env, args, _) in enumerate(BAD_CLUSTERS):
        processes.append(
            start([*RUN, "--strategy=multi_worker", *args, f"--model_dir={tmp_path / f'run{i}'}"], env=env)
        )
    for (env, _, expected), (code, _, err) in zip(BAD_CLUSTERS, finish(processes)):
        assert code == 2 and "Traceback" not in err, (env, err[-2000:])
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: --strategy: ") and expected in last, (env, last)
    assert os.listdir(tmp_path) == []  # nothing written
