"""A joined cluster (`Membership`) and how its workers agree on a run's start.

`join` starts this worker's part of the cluster that
`sngm_keras.training.cluster.describe` found; `sngm_keras.training.devices`
then places the run on the joined cluster's devices. `agree` hands every
worker the chief's outcome of opening the run folder, and the chief's last
checkpoint when it resumes.
"""

import json
import os

from sngm_keras.training.errors import ConfigError


class Membership:
    """A joined cluster: the TensorFlow strategy, or JAX's initialized runtime."""

    def __init__(self, cluster, backend, strategy=None):
        self.cluster, self.backend, self.strategy = cluster, backend, strategy
        self._tf_sum = None  # traced once: `sum_over_workers` may run after every update

    def broadcast(self, arrays):
        """The chief's `arrays` (a list of numpy arrays) on every worker."""
        if self.backend == "jax":
            from jax.experimental import multihost_utils

            return [_numpy(a) for a in multihost_utils.broadcast_one_to_all(list(arrays))]
        return _tf_broadcast(self.strategy, self.cluster.is_chief, arrays)

    def sum_over_workers(self, values):
        """The element-wise sum of every worker's `values` (a list of ints), on every worker."""
        import numpy as np

        if self.backend == "jax":
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(np.asarray(values, np.int32))).sum(axis=0).tolist()
        if self._tf_sum is None:
            self._tf_sum = _tf_summer(self.strategy)
        return self._tf_sum(np.asarray(values, np.float64)).astype(np.int64).tolist()


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
    """The bytes of the chief's last checkpoint, (weights, state), or ()."""
    if not os.path.exists(run_dir.state):
        return ()
    with open(run_dir.state, "rb") as f:
        state = f.read()
    with open(run_dir.weights_path(json.loads(state)), "rb") as f:
        return f.read(), state


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


def _tf_broadcast(strategy, is_chief, arrays):
    """The chief's arrays on every worker: one all-reduce (sum) in which the
    other workers give zeros, in float64 so that every float32 and every
    integer below 2**53 comes back exactly."""
    import numpy as np
    import tensorflow as tf

    dtypes = [np.asarray(a).dtype for a in arrays]
    local = [tf.constant(np.asarray(a, np.float64) if is_chief else np.zeros(np.shape(a), np.float64)) for a in arrays]

    @tf.function
    def reduce():
        def fn():
            context = tf.distribute.get_replica_context()
            # Only the first local replica contributes.
            first = tf.equal(context.replica_id_in_sync_group % _local_replicas(strategy), 0)
            return context.all_reduce(tf.distribute.ReduceOp.SUM, [tf.where(first, t, tf.zeros_like(t)) for t in local])

        return strategy.run(fn)

    summed = reduce()
    return [strategy.experimental_local_results(s)[0].numpy().astype(d) for s, d in zip(summed, dtypes)]


def _tf_summer(strategy):
    """A function: a float64 vector -> its sum over the workers (the first local replica's)."""
    import tensorflow as tf

    @tf.function
    def reduce(vector):
        def fn():
            context = tf.distribute.get_replica_context()
            first = tf.equal(context.replica_id_in_sync_group % _local_replicas(strategy), 0)
            return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.where(first, vector, tf.zeros_like(vector)))

        return strategy.run(fn)

    return lambda vector: strategy.experimental_local_results(reduce(tf.constant(vector)))[0].numpy()


def _local_replicas(strategy):
    return len(strategy.extended.worker_devices)
