"""One training run: data, model, optimizer, one `fit`, and the run's files.

`train(config)` validates everything first, then trains with
`MicroBatchModel` (the effective batch `batch_size` made of micro-batches of
`micro_batch_size` per replica), checkpoints every epoch, resumes from the
last checkpoint when started again with the same configuration, and writes
history.csv, summary.json, curves.png, final.keras and TensorBoard logs into
`model_dir`.

Keras' backend picks the path at two places only: the devices
(`sngm_keras.training.devices`: tf.distribute strategies, or
`keras.distribution.DataParallel` on JAX) and the input's feed
(`sngm_keras.data.make_datasets`: tf.data pipelines on TensorFlow; on JAX
the dataset held in memory as uint8 arrays, fed by `keras.utils.PyDataset`s,
with pad/crop/flip/normalize inside the jitted step on the device). On JAX
the whole step is always jitted (--jit_compile is TensorFlow's choice),
imagenet2012 needs TensorFlow, TensorBoard logs are written when TensorFlow
is installed, and nothing imports TensorFlow when it is not. final.keras is
the network alone on both paths, taking normalized images. A run resumes
only on the backend it started on (checkpoints/backend records a
non-TensorFlow one).
"""

import contextlib
import dataclasses
import functools
import logging
import time
from typing import Any

from sngm_keras import checks
from sngm_keras.data import examples_after, examples_per_epoch, make_datasets, steps_per_epoch
from sngm_keras.training import cluster as cluster_lib
from sngm_keras.training import devices, growing
from sngm_keras.training import membership as membership_lib
from sngm_keras.training.config import ConfigError
from sngm_keras.training.dataset_fields import default_image_size, is_folder
from sngm_keras.training.errors import as_config_errors
from sngm_keras.training.fitting import fit_run
from sngm_keras.training.outputs import write_outputs
from sngm_keras.training.rundir import RunDir
from sngm_keras.training.stopping import AgreedStopRequest, StopRequested

log = logging.getLogger("sngm_keras")


def train(config, extra_callbacks=(), stop_request=None):
    """Runs (or resumes, or finds finished) the run of `config`; returns its summary.

    With --strategy=multi_worker this is one worker's part (see
    `sngm_keras.training.cluster`); the summary then says whether it is the
    chief's. `stop_request` (anything with `is_set()`, e.g. a
    `threading.Event` a signal handler sets): once set, the update in flight
    finishes, is checkpointed, and `stopping.StopRequested` is raised with
    that checkpoint's state; the same configuration resumes there. In a
    cluster a `stopping.StopRequest` set on one worker stops every worker
    at the same update.
    """
    # Configuration: all of it checked before anything is read or written.
    backend = _check_config(config)
    cluster = config.cluster()
    lost_worker = cluster_lib.worker_lost_as_error(backend) if cluster else contextlib.nullcontext()
    with cluster_lib.worker_model_dir(config, cluster) as config, lost_worker:
        # The run folder: finished, to resume, or new (a cluster's workers join first to agree on it).
        run_dir = RunDir(config.model_dir)
        done, state, membership = _open_run_folder(config, run_dir, backend, cluster)
        if done is not None:
            log.info("%s already holds the finished run; nothing to do", run_dir.path)
            return _for_worker(dict(done, already_complete=True), cluster)
        if membership is not None and stop_request is not None:
            index, workers = cluster.index, cluster.num_workers
            stop_request = AgreedStopRequest(stop_request, membership.sum_over_workers, index, workers)
        start_epoch = min(state["epoch"], config.epochs) if state else 0
        start_batch = state.get("batch", 0) if state else 0

        # Devices: a tf.distribute strategy or a Keras distribution.
        with devices.placed(config, backend, membership) as placement:
            _set_numerics(config)
            micro = micro_batch_size(config, placement.replicas)

            # Data: the tf.data feed on TensorFlow, the PyDataset feed on JAX.
            # Each epoch keeps a last batch of whole micro-batches, so every B
            # built from the same micro-batch trains on the same examples.
            epoch_multiple = micro * placement.replicas
            sharded = membership is not None
            # A growing batch (--batch_growth): the resumed epoch's.
            batch_size = growing.batch_size_at(config, state, start_epoch)
            data = _make_data(config, placement, start_epoch, epoch_multiple, sharded, start_batch, batch_size)
            steps = steps_per_epoch(data.info, config.batch_size, epoch_multiple)
            _check_checkpoint_every(config, steps)
            epoch_size = examples_per_epoch(data.info.num_train, config.batch_size, epoch_multiple)
            agree = (membership.sum_over_workers, cluster.is_chief) if membership is not None else None
            growth = growing.make_growth(
                config, state, start_epoch, micro, placement.replicas, backend, epoch_size, agree
            )
            # Resumed within an epoch: its rest, then the epochs after it from their start.
            rest = None
            if start_batch and start_epoch + 1 < config.epochs and growth is None:
                rest = _make_data(config, placement, start_epoch + 1, epoch_multiple, sharded)
            seen = functools.partial(examples_after, batch_size=config.batch_size, examples_per_epoch=epoch_size)
            if growth is not None:
                seen = growth.examples_after
                # Each stretch of epochs at one batch: the input at that batch, from its first epoch on.
                rest = lambda size, epoch: _make_data(config, placement, epoch, epoch_multiple, sharded, 0, size)

            # Model and optimizer.
            from sngm_keras.training.factory import build_training_model

            model = build_training_model(config, data.info, steps, micro, placement, data.preprocessing, growth)

            # Fit: the folder is claimed only now, when everything above has worked.
            started = time.perf_counter()
            run_dir.claim(config)
            run_dir.record_backend(state, backend)
            try:
                recorder, rows, results = fit_run(
                    config,
                    run_dir,
                    state,
                    start_epoch,
                    model,
                    (data, rest),
                    steps,
                    seen,
                    extra_callbacks,
                    tensorboard=placement.tensorflow,
                    stop_request=stop_request,
                    growth=growth,
                )
            except StopRequested as stop:
                stop.chief = cluster is None or cluster.is_chief
                raise

            # Outputs.
            summary = write_outputs(
                config,
                run_dir,
                model,
                recorder,
                rows,
                results,
                placement.replicas,
                micro,
                data.info,
                validated=data.validation is not None,
            )
            log.debug("run finished in %.1f s", time.perf_counter() - started)
    return _for_worker(summary, cluster)


def _check_config(config):
    """Validates `config`; returns the backend."""
    config.validate()
    import keras

    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise ConfigError("strategy", f"the training app runs on the tensorflow or jax backend, not {backend}")
    if backend == "jax" and config.dataset == "imagenet2012":
        raise ConfigError(
            "dataset", "imagenet2012 needs the TensorFlow input pipeline: run it with KERAS_BACKEND=tensorflow"
        )
    return backend


def _set_numerics(config):
    """The dtype policy, and every seed (Python, NumPy, Keras, TensorFlow when
    installed) before the data and the model are made."""
    import keras

    keras.mixed_precision.set_dtype_policy(config.dtype_policy)
    keras.utils.set_random_seed(config.seed)


def _for_worker(summary, cluster):
    return summary if cluster is None else dict(summary, chief=cluster.is_chief)


def _open_run_folder(config, run_dir, backend, cluster):
    """(the summary of a finished run or None, the last checkpoint's state or
    None, the joined cluster's `Membership` or None). The devices are
    prepared unless the run is finished; in a cluster every worker joins
    first and follows the chief's folder."""
    if cluster is None:
        done, state = _open_run(config, run_dir, backend)
        if done is None:
            devices.prepare(config, backend)
        return done, state, None
    devices.prepare(config, backend)
    membership = membership_lib.join(config, cluster, backend)
    # A worker's own (temporary) folder is claimed at once: the chief's checkpoint is copied into it.
    done = membership_lib.agree(
        membership, run_dir, lambda: _open_run(config, run_dir, backend, claim=not cluster.is_chief)[0]
    )
    return done, run_dir.load_state(), membership  # the chief's state, copied to the others


def _open_run(config, run_dir, backend, claim=False):
    """Checks the run folder, writing nothing unless `claim` (nothing is
    written into a user's model_dir before the data, the devices and the
    model are resolved: a failed start leaves it as it was); returns (the
    summary of a finished run or None, the last checkpoint's state or None)."""
    if claim:
        run_dir.claim(config)
    else:
        run_dir.check(config)
    done = run_dir.finished_summary(config.max_updates)
    if done is not None:
        return done, None
    state = run_dir.load_state()
    run_dir.check_backend(state, backend)
    return None, state


def _check_checkpoint_every(config, steps):
    updates = config.epochs * steps
    if config.max_updates:
        updates = min(updates, config.max_updates)
    if config.checkpoint_every is not None and config.checkpoint_every > updates:  # the default fits any run
        raise ConfigError(
            "checkpoint_every",
            f"{config.checkpoint_every} updates is more than the run's {updates}; use a smaller N, or 0 for "
            "checkpoints at epoch ends only",
        )


@as_config_errors()
def micro_batch_size(config, replicas):
    """The micro-batch of each replica: --micro_batch_size, or the replica's
    whole share of the batch."""
    if config.micro_batch_size is None:
        return checks.check_replica_split(config.batch_size, replicas)
    checks.check_batch_split(config.batch_size, config.micro_batch_size, replicas, name="micro_batch_size")
    return config.micro_batch_size


@dataclasses.dataclass
class _Data:
    """The run's input: training, test and validation batches, the dataset's
    `DatasetInfo`, and the PyDataset feed's on-device preprocessing."""

    train: Any
    test: Any
    info: Any
    preprocessing: Any | None = None
    validation: Any | None = None


def _make_data(config, placement, start_epoch, epoch_multiple, sharded, start_batch=0, batch_size=None):
    """The input of the run on `placement` in batches of `batch_size`
    (default --batch_size) from batch `start_batch` of epoch `start_epoch`
    (to the end of that epoch only when `start_batch` > 0):
    the tf.data feed on TensorFlow (`sharded`: every worker keeps its
    replicas' rows), the PyDataset feed on JAX."""
    feed = "tf.data" if placement.backend == "tensorflow" else "pydataset"
    folder_args = {}
    if is_folder(config.dataset):
        folder_args = dict(
            stream=config.stream,
            skip_bad_images=config.skip_bad_images,
            default_image_size=default_image_size(config),
        )
    arguments = dict(
        dataset=config.dataset,
        data_dir=config.data_dir,
        download=config.download,
        batch_size=batch_size or config.batch_size,
        eval_batch_size=config.eval_batch_size,
        augment=config.augment,
        seed=config.seed,
        start_epoch=min(start_epoch, config.epochs - 1),
        num_epochs=start_epoch + 1 if start_batch else config.epochs,
        start_batch=start_batch,
        image_size=config.image_size,
        validation_size=config.validation_size,
        feed=feed,
        share=placement.share,
        epoch_multiple=epoch_multiple,
        **folder_args,
    )
    made = make_datasets(**arguments)
    if feed == "pydataset":
        data = _Data(*made[:4], validation=made[4] if len(made) > 4 else None)
        _check_even_eval_batches(data, config.eval_batch_size, placement.replicas)
        return data
    data = _Data(*made[:3], validation=made[3] if len(made) > 3 else None)
    if data.info.streamed and placement.replicas > 1:
        # Each worker reads only its replicas' files, as per-replica batches.
        def per_worker(context):
            share = (context.input_pipeline_id, context.num_input_pipelines)
            replica_batches = context.num_replicas_in_sync // context.num_input_pipelines
            return make_datasets(**dict(arguments, share=share, replica_batches=replica_batches))[0]

        data.train = placement.strategy.distribute_datasets_from_function(per_worker)
    elif sharded:
        data.train = cluster_lib.shard_by_examples(data.train)
    if sharded:
        data.test = cluster_lib.shard_by_examples(data.test)
    return data


def _check_even_eval_batches(data, batch_size, replicas):
    """JAX shards every batch evenly; a padded batch would bias the metrics."""
    for name, count in (("test", data.info.num_test), ("validation", data.info.num_validation)):
        last = count % batch_size or batch_size
        if count and replicas > 1 and (batch_size % replicas or last % replicas):
            raise ConfigError(
                "eval_batch_size",
                f"{name} batches of {batch_size} (the last of {last}) do not split over {replicas} "
                "devices; pick an --eval_batch_size that does",
            )
