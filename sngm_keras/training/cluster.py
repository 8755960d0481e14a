"""The workers of a `--strategy=multi_worker` run, and how they agree on its start.

Every worker runs the same command. The cluster is described

- on TensorFlow by `TF_CONFIG` (tf.distribute's convention): the chief is
  the task of type "chief", or worker 0 when there is none;
- on JAX by the coordinator's address (process 0's host:port), the number of
  processes and this process's id, from `coordinator_address`,
  `num_processes`, `process_id` or else the variables
  `keras.distribution.initialize` reads (KERAS_DISTRIBUTION_JOB_ADDRESSES,
  whose first address is the coordinator, KERAS_DISTRIBUTION_NUM_PROCESSES,
  KERAS_DISTRIBUTION_PROCESS_ID; JAX_COORDINATOR_ADDRESS for the address).
  Process 0 is the chief.

Only the chief reads and writes `model_dir`. The other workers run in a
temporary folder they remove at the end: they save like the chief (saving is
collective under MultiWorkerMirroredStrategy, as Keras documents) and keep
nothing. So the workers' `model_dir` need not be shared: when the chief
resumes, it sends its last checkpoint to the others
(`sngm_keras.training.membership.agree`), which resume from their copy of it.
"""

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile

from sngm_keras.training.errors import ConfigError

TF_TASK_TYPES = ("chief", "worker")
_JAX_VARIABLES = {
    "coordinator_address": ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("KERAS_DISTRIBUTION_NUM_PROCESSES",),
    "process_id": ("KERAS_DISTRIBUTION_PROCESS_ID",),
}


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This worker's place in the cluster."""

    num_workers: int
    index: int  # TensorFlow: position among chief + workers; JAX: process id
    is_chief: bool
    coordinator_address: str | None = None  # JAX


def describe(config, backend, environ=None):
    """The `Cluster` of `config`, None unless --strategy=multi_worker.

    Raises ConfigError naming what is missing or malformed. TF_CONFIG is read
    only for multi_worker: other strategies ignore it."""
    if config.strategy != "multi_worker":
        return None
    if config.validation_size:
        # Its evaluations gather predictions on the host (`predict`), which
        # this module does not assemble across workers.
        raise ConfigError(
            "validation_size", "the validation split runs on one machine; leave it at 0 with --strategy=multi_worker"
        )
    environ = os.environ if environ is None else environ
    if backend == "jax":
        return _jax_cluster(config, environ)
    return _tf_cluster(environ.get("TF_CONFIG"))


def _tf_cluster(text):
    def bad(message):
        return ConfigError("strategy", f"multi_worker: TF_CONFIG {message}")

    if not text:
        raise ConfigError(
            "strategy",
            "multi_worker needs the cluster in the TF_CONFIG environment variable, e.g. "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}',
        )
    try:
        tf_config = json.loads(text)
    except ValueError as error:
        raise bad(f"is not valid JSON ({error})") from None
    if not isinstance(tf_config, dict):
        raise bad("must be a JSON object with 'cluster' and 'task'")
    cluster, task = tf_config.get("cluster"), tf_config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise bad("has no 'cluster' (an object of job name: [host:port, ...])")
    for job, addresses in cluster.items():
        if job not in TF_TASK_TYPES:
            raise bad(f"names a {job!r} job; multi_worker runs chief and worker jobs only")
        if not isinstance(addresses, list) or not addresses or not all(isinstance(a, str) for a in addresses):
            raise bad(f"cluster {job!r} must be a non-empty list of host:port strings")
    if len(cluster.get("chief", ())) > 1:
        raise bad("names more than one chief")
    if not isinstance(task, dict):
        raise bad("has no 'task' ({'type': ..., 'index': ...}): which task is this process?")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster:
        raise bad(f"task type {kind!r} is not a job of its cluster ({', '.join(cluster)})")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise bad(f"task index {index!r} is out of range: its cluster has {len(cluster[kind])} {kind} task(s)")
    chiefs = len(cluster.get("chief", ()))
    return Cluster(
        num_workers=chiefs + len(cluster.get("worker", ())),
        index=index if kind == "chief" else chiefs + index,
        is_chief=kind == "chief" or (not chiefs and index == 0),
    )


def _jax_cluster(config, environ):
    values, sources = {}, {}
    for field, variables in _JAX_VARIABLES.items():
        value, source = getattr(config, field), f"--{field}"
        for variable in variables:
            if value is None and environ.get(variable):
                value, source = environ[variable], variable
        values[field], sources[field] = value, source
    missing = [f"--{field}" for field, value in values.items() if value is None]
    if missing:
        raise ConfigError(
            "strategy",
            f"multi_worker on the jax backend needs {', '.join(missing)} (or KERAS_DISTRIBUTION_JOB_ADDRESSES, "
            "KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID)",
        )
    count = _integer(values["num_processes"], sources["num_processes"], "num_processes")
    process = _integer(values["process_id"], sources["process_id"], "process_id")
    if count < 1:
        raise _jax_error(sources["num_processes"], "num_processes", f"must be >= 1, got {count}")
    if not 0 <= process < count:
        raise _jax_error(sources["process_id"], "process_id", f"must be in 0..{count - 1}, got {process}")
    address = str(values["coordinator_address"]).split(",")[0].strip()
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise _jax_error(
            sources["coordinator_address"], "coordinator_address", f"must be host:port (process 0's), got {address!r}"
        )
    return Cluster(num_workers=count, index=process, is_chief=process == 0, coordinator_address=address)


def _jax_error(source, field, message):
    if source.startswith("--"):
        return ConfigError(field, message)
    return ConfigError("strategy", f"{source} {message}")


def _integer(value, source, field):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise _jax_error(source, field, f"must be an integer, got {value!r}") from None


@contextlib.contextmanager
def worker_model_dir(config, cluster):
    """`config`, its model_dir a temporary folder on a worker that is not the
    chief (removed on leaving)."""
    if cluster is None or cluster.is_chief:
        yield config
        return
    folder = tempfile.mkdtemp(prefix=f"sngm-worker{cluster.index}-")
    try:
        yield dataclasses.replace(config, model_dir=folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def shard_by_examples(dataset):
    """`dataset` with tf.data's DATA auto-sharding: every worker computes the
    same global batches (their order and augmentation depend on the seed and
    the epoch only) and keeps its replicas' rows of each, so a run on several
    workers sees the batches of a run on one machine."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


class WorkerLost(RuntimeError):
    """Another worker of the cluster stopped during the run."""


@contextlib.contextmanager
def worker_lost_as_error(backend):
    """Turns TensorFlow's errors of a lost peer (MultiWorkerMirroredStrategy
    aborts the collectives when its health check finds a worker down) into
    `WorkerLost`, one line long."""
    if backend != "tensorflow":
        yield
        return
    import tensorflow as tf

    lost = (
        tf.errors.UnavailableError,
        tf.errors.AbortedError,
        tf.errors.CancelledError,
        tf.errors.DeadlineExceededError,
    )
    try:
        yield
    except lost as error:
        raise WorkerLost(
            f"the cluster lost a worker ({_lost_tasks(str(error))}); start the same command on every worker "
            "again to resume from the chief's last checkpoint"
        ) from None


def _lost_tasks(message):
    """The tasks TensorFlow names as down, or the error's first words."""
    tasks = sorted(set(re.findall(r"^\s*(/job:\w+/replica:\d+/task:\d+)\s*$", message, re.MULTILINE)))
    if tasks:
        return "stopped: " + ", ".join(tasks)
    first = re.sub(r"\{\{[^}]*\}\}\s*", "", message).strip().splitlines()
    return first[0][:160] if first else "no details"
