"""A joined cluster (`Membership`) and how its workers agree on a run's start.

`join` starts this worker's part of the cluster that
`sngm_keras.training.cluster.describe` found; `sngm_keras.training.devices`
then places the run on the joined cluster's devices. `agree` hands every
worker the chief's outcome of opening the run folder, and the chief's last
checkpoint when it resumes.
"""

import json

from sngm_keras.training.errors import ConfigError


class Membership:
    """A joined cluster: the TensorFlow strategy, or JAX's initialized runtime."""

    def __init__(self, cluster, backend, strategy=None):
        self.cluster, self.backend, self.strategy = cluster, backend, strategy
        self._tf_sum = None  # TensorFlow's all-reduce, traced once: `sum_over_workers` may run after every update

    def broadcast(self, arrays):
        """The chief's `arrays` (a list of numpy arrays) on every worker."""
        import numpy as np

        if self.backend == "jax":
            from jax.experimental import multihost_utils

            return [_numpy(a) for a in multihost_utils.broadcast_one_to_all(list(arrays))]
        # A sum in which the other workers give zeros, in float64 so that
        # every float32 and every integer below 2**53 comes back exactly.
        local = [np.asarray(a, np.float64) if self.cluster.is_chief else np.zeros(np.shape(a)) for a in arrays]
        return [total.astype(np.asarray(a).dtype) for total, a in zip(self._tf_total(local), arrays)]

    def sum_over_workers(self, values):
        """The element-wise sum of every worker's `values` (a list of ints), on every worker."""
        import numpy as np

        if self.backend == "jax":
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(np.asarray(values, np.int32))).sum(axis=0).tolist()
        return self._tf_total([np.asarray(values, np.float64)])[0].astype(np.int64).tolist()

    def _tf_total(self, arrays):
        if self._tf_sum is None:
            self._tf_sum = _tf_summer(self.strategy)
        return self._tf_sum(arrays)


def join(config, cluster, backend):
    """Starts this worker's part of the cluster; returns the `Membership`.

    TensorFlow: creates the MultiWorkerMirroredStrategy (which waits until
    every worker is up). JAX: `keras.distribution.initialize` (JAX's own
    multi-process runtime; gloo collectives on the CPU)."""
    if backend == "jax":
        import keras

        keras.distribution.initialize(cluster.coordinator_address, cluster.num_workers, cluster.index)
        _restore_sigterm_handler()
        return Membership(cluster, backend)
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    _restore_sigterm_handler()
    return Membership(cluster, backend, strategy)


def _restore_sigterm_handler():
    """Gives SIGTERM back to the handler the process had. The coordination
    service agent of TensorFlow and of JAX's distributed runtime installs
    its own SIGTERM handler in C++ (a preemption notifier), which would
    swallow the signal; Python still reports its own handler as installed."""
    import signal
    import threading

    handler = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread() and handler is not None:
        signal.signal(signal.SIGTERM, handler)


def agree(membership, run_dir, open_run):
    """Runs `open_run()` (-> the summary of a finished run or None) on every
    worker and hands every worker the chief's outcome: when the chief
    resumes, the others get its checkpoint in their `run_dir`, so every
    worker loads the same one (loading is collective on JAX). When the chief
    failed (its ConfigError, re-raised there), the others raise one too."""
    import numpy as np

    error, done, payload = None, None, []
    try:
        done = open_run()
        if membership.cluster.is_chief and done is None:
            payload = [_to_words(data) for data in _checkpoint_files(run_dir)]
    except ConfigError as raised:
        error = raised
    sizes = [len(words) for words in payload] or [0, 0]
    head = membership.broadcast([np.array([error is not None, done is not None, *sizes], np.int64)])[0]
    failed, finished, sizes = bool(head[0]), bool(head[1]), [int(n) for n in head[2:]]
    if error is not None and membership.cluster.is_chief:
        raise error
    if failed:
        raise ConfigError("strategy", "the chief stopped before training; its output says why")
    if error is not None:  # pragma: no cover - a worker's temporary folder is always usable
        raise error
    if finished:
        return done if done is not None else {"complete": True}
    if sizes[0]:
        received = membership.broadcast(payload or [np.zeros(n, np.int32) for n in sizes])
        if not membership.cluster.is_chief:
            _write_checkpoint(run_dir, *[_from_words(words) for words in received])
    return None


def _checkpoint_files(run_dir):
    """The bytes of the checkpoint the chief resumes from (its newest
    complete one, `RunDir.load_state`), (weights, state), or ()."""
    state = run_dir.load_state()
    if state is None:
        return ()
    state = {k: v for k, v in state.items() if k != "passed_over"}
    with open(run_dir.weights_path(state), "rb") as f:
        return f.read(), json.dumps(state).encode()


def _write_checkpoint(run_dir, weights, state):
    from sngm_keras.training.rundir import write_atomic

    with open(run_dir.weights_path(json.loads(state)), "wb") as f:
        f.write(weights)
    write_atomic(run_dir.state, state.decode())


def _to_words(data):
    """bytes -> int32 words, the length first: every broadcast keeps them exactly."""
    import numpy as np

    padded = data + b"\0" * (-len(data) % 4)
    return np.concatenate([np.array([len(data)], np.int32), np.frombuffer(padded, np.int32)])


def _from_words(words):
    import numpy as np

    words = np.asarray(words, np.int32)
    return words[1:].tobytes()[: int(words[0])]


def _numpy(value):
    import numpy as np

    return np.asarray(value)


def _tf_summer(strategy):
    """A function: a list of float64 arrays -> each one's sum over the
    workers (the first local replica's), as numpy arrays; one all-reduce."""
    import tensorflow as tf

    @tf.function
    def reduce(arrays):
        def fn():
            context = tf.distribute.get_replica_context()
            # Only the first local replica contributes.
            first = tf.equal(context.replica_id_in_sync_group % _local_replicas(strategy), 0)
            masked = [tf.where(first, a, tf.zeros_like(a)) for a in arrays]
            return context.all_reduce(tf.distribute.ReduceOp.SUM, masked)

        return strategy.run(fn)

    def total(arrays):
        summed = reduce([tf.constant(a, tf.float64) for a in arrays])
        return [strategy.experimental_local_results(s)[0].numpy() for s in summed]

    return total


def _local_replicas(strategy):
    return len(strategy.extended.worker_devices)
