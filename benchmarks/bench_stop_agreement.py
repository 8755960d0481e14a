"""What agreeing on a stop costs a cluster: the time of the one collective
each worker makes after every update under --strategy=multi_worker
(`Membership.sum_over_workers`, through `AgreedStopRequest`).

Starts --workers processes on 127.0.0.1 (TensorFlow: TF_CONFIG; JAX:
keras.distribution.initialize), each joining the cluster as the training
app does and timing --calls agreements; prints the chief's median and
quartiles.

    python -m benchmarks.bench_stop_agreement --backend=tensorflow --calls=200
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags

from apps._cli import fail, run

FLAGS = flags.FLAGS
flags.DEFINE_enum("backend", "tensorflow", ["tensorflow", "jax"], "Keras backend of the workers.")
flags.DEFINE_integer("workers", 2, "Worker processes.", lower_bound=2)
flags.DEFINE_integer("calls", 200, "Agreements timed per worker.", lower_bound=1)
flags.DEFINE_string("output", "bench_stop_agreement.json", "JSON results.")


def worker(index, workers, port, calls):
    """One worker: joins, agrees `calls` times with nobody signalled; returns the seconds of each."""
    from sngm_keras.training import TrainConfig, cluster, membership
    from sngm_keras.training.stopping import AgreedStopRequest, StopRequest

    backend = os.environ["KERAS_BACKEND"]
    config = TrainConfig(strategy="multi_worker")
    if backend == "jax":
        config = TrainConfig(
            strategy="multi_worker",
            coordinator_address=f"127.0.0.1:{port}",
            num_processes=workers,
            process_id=index,
        )
    described = cluster.describe(config, backend)
    joined = membership.join(config, described, backend)
    request = AgreedStopRequest(StopRequest(), joined.sum_over_workers, described.index, described.num_workers)
    request.is_set()  # traced or compiled once
    seconds = []
    stopped = False
    for _ in range(calls):
        start = time.perf_counter()
        stopped |= request.is_set()
        seconds.append(time.perf_counter() - start)
    if stopped:
        raise RuntimeError("a stop was agreed on, though no worker asked for one")
    return seconds


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ports = [free_port() for _ in range(FLAGS.workers)]
    processes = []
    for index in range(FLAGS.workers):
        env = dict(os.environ, KERAS_BACKEND=FLAGS.backend, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
        )
        command = [sys.executable, "-m", "benchmarks.bench_stop_agreement", "--worker_args"]
        command.append(json.dumps([index, FLAGS.workers, ports[0], FLAGS.calls]))
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=600) for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
        fail("the workers did not finish within 600 s")
    for process, (_, err) in zip(processes, outputs):
        if process.returncode:
            fail(f"a worker failed (exit code {process.returncode}): {(err.strip().splitlines() or [''])[-1]}")
    seconds = json.loads(outputs[0][0].strip().splitlines()[-1])
    quartiles = statistics.quantiles(seconds, n=4)
    results = {
        "backend": FLAGS.backend,
        "workers": FLAGS.workers,
        "calls": FLAGS.calls,
        "median_ms": statistics.median(seconds) * 1000,
        "quartiles_ms": [q * 1000 for q in quartiles[::2]],
    }
    print(
        f"{FLAGS.backend}, {FLAGS.workers} workers on 127.0.0.1: one stop agreement takes "
        f"{results['median_ms']:.2f} ms (median; quartiles {results['quartiles_ms'][0]:.2f}-"
        f"{results['quartiles_ms'][1]:.2f} ms)"
    )
    with open(FLAGS.output, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker_args":
        print(json.dumps(worker(*json.loads(sys.argv[2]))))
    else:
        run(main)
