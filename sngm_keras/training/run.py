"""One training run: data, model, optimizer, one `fit`, and the run's files.

`train(config)` validates everything first, then trains with
`MicroBatchModel` (the effective batch `batch_size` made of micro-batches of
`micro_batch_size` per replica), checkpoints every epoch, resumes from the
last checkpoint when started again with the same configuration, and writes
history.csv, summary.json, curves.png, final.keras and TensorBoard logs into
`model_dir`.

Keras' backend picks the path. TensorFlow: tf.data pipelines
(`sngm_keras.data.make_datasets`) and tf.distribute strategies. JAX: the
dataset held in memory as uint8 arrays, fed by a `keras.utils.PyDataset`,
and pad/crop/flip/normalize inside the jitted step on the device
(`sngm_keras.training.jax_data`); --strategy auto (several devices) or
mirrored use `keras.distribution.DataParallel` over this host's devices,
one_device none, multi_worker over every process's devices (each process
feeding its share of every batch); the whole step is always jitted
(--jit_compile is TensorFlow's choice); --deterministic sets
`--xla_gpu_deterministic_ops`; imagenet2012 needs TensorFlow; TensorBoard
logs are written when TensorFlow is installed; nothing imports TensorFlow
when it is not. final.keras is the network alone on both paths, taking
normalized images. A run resumes only on the backend it started on
(checkpoints/backend records a non-TensorFlow one).
"""

import json
import logging
import math
import os
import platform
import sys
import time

from sngm_keras.training.config import ConfigError, keras_verbosity
from sngm_keras.training.provenance import git_commit, package_version, utc_now
from sngm_keras.training.rundir import RunDir, write_atomic

log = logging.getLogger("sngm_keras")


def prepare_devices(config):
    """What must happen before TensorFlow (or JAX) starts: logical CPU devices."""
    import keras

    if keras.backend.backend() == "jax":
        return _prepare_jax_devices(config)
    if keras.backend.backend() != "tensorflow" or config.num_cpu_devices <= 1:
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * config.num_cpu_devices
        )
    except RuntimeError:
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing != config.num_cpu_devices:
            raise ConfigError("num_cpu_devices", f"TensorFlow already started with {existing} CPU device(s)") from None


def make_strategy(config):
    import tensorflow as tf

    if config.strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if config.strategy == "mirrored" or (config.strategy == "auto" and (len(gpus) > 1 or len(cpus) > 1)):
        return tf.distribute.MirroredStrategy(gpus or cpus)
    if config.strategy == "one_device":
        return tf.distribute.OneDeviceStrategy((gpus or cpus)[0])
    return tf.distribute.get_strategy()


def _versions():
    import keras

    versions = {"keras": keras.__version__, "backend": keras.backend.backend()}
    if "tensorflow" in sys.modules:  # reported when used, never imported for it
        versions["tensorflow"] = sys.modules["tensorflow"].__version__
    if keras.backend.backend() == "jax":
        import jax

        versions["jax"] = jax.__version__
        versions["devices"] = [str(d) for d in jax.devices()]
    return versions


def train(config, extra_callbacks=()):
    """Runs (or resumes, or finds finished) the run of `config`; returns its summary.

    Keras' backend decides the path: TensorFlow (tf.data input, tf.distribute
    strategies) or JAX (arrays in memory, augmentation on the device,
    `keras.distribution.DataParallel`; see `sngm_keras.training.jax_data`).
    With --strategy=multi_worker this is one worker's part (see
    `sngm_keras.training.cluster`); the summary then says whether it is the
    chief's.
    """
    config.validate()
    import keras

    from sngm_keras.training import cluster as cluster_lib

    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise ConfigError("strategy", f"the training app runs on the tensorflow or jax backend, not {backend}")
    if backend == "jax":
        _check_jax_config(config)
    cluster = cluster_lib.describe(config, backend)
    if cluster is None:
        return _train(config, backend, None, extra_callbacks)
    with cluster_lib.worker_model_dir(config, cluster) as worker_config:
        with cluster_lib.worker_lost_as_error(backend):
            summary = _train(worker_config, backend, cluster, extra_callbacks)
    return dict(summary, chief=cluster.is_chief)


def _train(config, backend, cluster, extra_callbacks):
    """Opens the run (on every worker of a cluster, which then follow the
    chief) and trains it."""
    import keras

    from sngm_keras.training import cluster as cluster_lib

    run_dir = RunDir(config.model_dir)
    membership = None
    if cluster is None:
        done, state = _open_run(config, run_dir, backend)
        if done is None:
            prepare_devices(config)
    else:
        prepare_devices(config)
        membership = cluster_lib.join(config, cluster, backend)
        # A worker's own (temporary) folder is claimed at once: the chief's checkpoint is copied into it.
        done = cluster_lib.agree(membership, run_dir,
                                 lambda: _open_run(config, run_dir, backend, claim=not cluster.is_chief)[0])
        state = run_dir.load_state()  # the chief's, copied to the others
    if done is not None:
        log.info("%s already holds the finished run; nothing to do", run_dir.path)
        return dict(done, already_complete=True)
    start_epoch = min(state["epoch"], config.epochs) if state else 0
    if backend == "jax":
        previous = keras.distribution.distribution()
        try:
            return _train_jax(config, run_dir, state, start_epoch, extra_callbacks)
        finally:
            keras.distribution.set_distribution(previous)
    return _train_tf(config, run_dir, state, start_epoch, extra_callbacks, membership)


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
    _check_backend(run_dir, state, backend)
    return None, state


def _train_tf(config, run_dir, state, start_epoch, extra_callbacks, membership):
    import keras

    from sngm_keras.data import make_datasets, steps_per_epoch

    import tensorflow as tf

    keras.mixed_precision.set_dtype_policy(config.dtype_policy)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = make_strategy(config) if membership is None else membership.strategy
    replicas = strategy.num_replicas_in_sync
    micro = _micro_batch_size(config, replicas)
    train_ds, test_ds, info, *validation_ds = make_datasets(
        config.dataset, data_dir=config.data_dir, download=config.download, batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size, augment=config.augment, seed=config.seed,
        start_epoch=min(start_epoch, config.epochs - 1), num_epochs=config.epochs, image_size=config.image_size,
        validation_size=config.validation_size,
    )
    if membership is not None:
        from sngm_keras.training.cluster import shard_by_examples

        train_ds, test_ds = shard_by_examples(train_ds), shard_by_examples(test_ds)
    steps = steps_per_epoch(info, config.batch_size)
    model = _build(config, strategy, info, steps, micro)
    return _fit(config, run_dir, state, start_epoch, model, train_ds, test_ds, info, steps, replicas, micro,
                extra_callbacks, tensorboard=True, validation_ds=validation_ds[0] if validation_ds else None)


def _micro_batch_size(config, replicas):
    if config.micro_batch_size is None:
        micro = config.batch_size // replicas
        if not micro or config.batch_size % replicas:
            raise ConfigError(
                "batch_size", f"{config.batch_size} does not split evenly over {replicas} replicas; use a multiple "
                f"of {replicas}, or fewer --num_cpu_devices")
        return micro
    micro = config.micro_batch_size
    if config.batch_size % (micro * replicas):
        raise ConfigError(
            "micro_batch_size",
            f"--batch_size={config.batch_size} is not a multiple of {micro} x {replicas} replica(s)",
        )
    return micro


def _check_backend(run_dir, state, backend):
    """A run continues on the backend it started on (its data order and
    checkpoint layout are the backend's). Runs on other backends than
    TensorFlow record theirs in checkpoints/backend (`_record_backend`)."""
    path = os.path.join(run_dir.checkpoints, "backend")
    if state:
        recorded = open(path).read().strip() if os.path.exists(path) else "tensorflow"
        if recorded != backend:
            raise ConfigError(
                "model_dir",
                f"{run_dir.path} holds a run trained on the {recorded} backend; resume it with "
                f"KERAS_BACKEND={recorded}, or use another --model_dir",
            )


def _record_backend(run_dir, state, backend):
    path = os.path.join(run_dir.checkpoints, "backend")
    if state:
        return
    if backend != "tensorflow":
        write_atomic(path, backend + "\n")
    elif os.path.exists(path):
        os.remove(path)


def _fit(config, run_dir, state, start_epoch, model, train_ds, test_ds, info, steps, replicas, micro,
         extra_callbacks, tensorboard, validation_ds=None):
    """Claim the run folder, resume, fit, evaluate, and write the run's files (both backends)."""
    import keras

    run_dir.claim(config)
    _record_backend(run_dir, state, keras.backend.backend())
    if state:
        model.load_weights(run_dir.weights_path(state))
        log.info("resumed from %s (epoch %d)", state["weights"], start_epoch)

    rows = [r for r in run_dir.read_history() if int(r["epoch"]) <= start_epoch]
    from sngm_keras.training import callbacks as cb

    monitor = None
    if validation_ds is not None:
        every = max(1, steps // config.validations_per_epoch)
        monitor = cb.ValidationMonitor(run_dir, validation_ds, every, config.batch_size, info.num_train)
    recorder = cb.EpochRecorder(
        run_dir, rows, config.batch_size, info.num_train,
        base_wall_seconds=state["wall_seconds"] if state else 0.0,
        base_train_seconds=state["train_seconds"] if state else 0.0,
        validation=monitor, started_utc=(state or {}).get("started_utc") or utc_now(),
    )
    # The monitor first: the recorder's history row takes its epoch-end figures.
    callbacks = [*([monitor] if monitor else []), recorder, cb.SkippedStepsMonitor(), *extra_callbacks]
    if config.max_updates:
        callbacks.append(cb.StopAfterUpdates(config.max_updates))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=run_dir.logs, update_freq="epoch"))
    started = time.perf_counter()
    if start_epoch < config.epochs and not _reached(model, config.max_updates):
        model.fit(
            train_ds, epochs=config.epochs, initial_epoch=start_epoch, steps_per_epoch=steps,
            validation_data=test_ds, validation_freq=config.eval_every, callbacks=callbacks,
            verbose=keras_verbosity(config.verbose), shuffle=False,
        )
    results = model.evaluate(test_ds, verbose=0, return_dict=True)
    summary = _summary(config, model, recorder, rows, results, replicas, micro, info)
    if monitor is not None:
        summary.update(_validation_summary(run_dir.read_validation(), info.num_validation))
    model.model.save(run_dir.final_model)
    from sngm_keras.training.curves import plot_curves, plot_noise_scale

    if rows:
        plot_curves({curves_title(config): {_label(config): rows}}, run_dir.curves)
        plot_noise_scale(rows, config.batch_size, run_dir.noise_scale_plot)
    write_atomic(run_dir.summary, json.dumps(summary, indent=2))
    log.info("run finished in %.1f s", time.perf_counter() - started)
    return summary


# -- JAX ----------------------------------------------------------------------


def _check_jax_config(config):
    """What the JAX path cannot do, found before the run folder is claimed."""
    if config.dataset == "imagenet2012":
        raise ConfigError("dataset", "imagenet2012 needs the TensorFlow input pipeline: run it with "
                          "KERAS_BACKEND=tensorflow")


def _prepare_jax_devices(config):
    """JAX options that must be set before its backend starts."""
    import jax

    try:
        from jax._src.xla_bridge import backends_are_initialized

        started = backends_are_initialized()
    except ImportError:  # pragma: no cover - a JAX without it
        started = False
    if config.deterministic and "--xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
        if started:
            log.warning("--deterministic: JAX started already; XLA_FLAGS=--xla_gpu_deterministic_ops=true "
                        "is not applied")
        else:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()
    if config.num_cpu_devices > 1:
        if not started:
            try:
                jax.config.update("jax_num_cpu_devices", config.num_cpu_devices)
            except RuntimeError:  # started after all: the count below tells
                pass
        existing = len(jax.devices("cpu"))
        if existing != config.num_cpu_devices:
            raise ConfigError("num_cpu_devices", f"JAX already started with {existing} CPU device(s)")


def make_distribution(config):
    """`keras.distribution.DataParallel` over this host's devices, or None for one device.

    auto: all devices of JAX's default platform when there are several;
    mirrored: those devices (or the --num_cpu_devices CPU devices) even if
    just one; one_device: the first device; multi_worker: the devices of
    every process.
    """
    import jax
    import keras

    if config.strategy == "one_device":
        return None
    devices = jax.devices("cpu") if config.num_cpu_devices > 1 else jax.devices()
    if config.strategy == "auto" and len(devices) < 2:
        return None
    # Several processes: each feeds its share of every batch itself (jax_data).
    return keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)


def _hide_accelerators_from_tensorflow():
    """Imports TensorFlow, when installed, with no GPU (JAX has them); False without it.

    Keras' set_random_seed and TensorBoard import it when it is there, and
    TensorFlow would otherwise reserve the GPUs' memory."""
    try:
        from sngm_keras.data.pipeline import import_tf

        import_tf()
    except ImportError:
        return False
    return True


def _train_jax(config, run_dir, state, start_epoch, extra_callbacks):
    import jax
    import keras
    import numpy as np

    from sngm_keras.data import steps_per_epoch
    from sngm_keras.training import jax_data

    has_tensorflow = _hide_accelerators_from_tensorflow()
    keras.mixed_precision.set_dtype_policy(config.dtype_policy)
    keras.utils.set_random_seed(config.seed)
    distribution = make_distribution(config)
    keras.distribution.set_distribution(distribution)
    replicas = 1 if distribution is None else int(np.prod(distribution.device_mesh.shape))
    micro = _micro_batch_size(config, replicas)
    train_ds, test_ds, info, preprocessing, *validation_ds = jax_data.make_datasets(
        config.dataset, data_dir=config.data_dir, download=config.download, batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size, augment=config.augment, seed=config.seed,
        start_epoch=min(start_epoch, config.epochs - 1), num_epochs=config.epochs,
        validation_size=config.validation_size, share=(jax.process_index(), jax.process_count()),
    )
    for name, count in (("test", info.num_test), ("validation", info.num_validation)):
        last = count % test_ds.batch_size or test_ds.batch_size
        if count and replicas > 1 and (test_ds.batch_size % replicas or last % replicas):
            # JAX shards every batch evenly; a padded batch would bias the metrics.
            raise ConfigError(
                "eval_batch_size",
                f"{name} batches of {test_ds.batch_size} (the last of {last}) do not split over {replicas} "
                "devices; pick an --eval_batch_size that does",
            )
    steps = steps_per_epoch(info, config.batch_size)
    model = _build_jax(config, info, steps, micro, preprocessing)
    if not has_tensorflow:
        log.info("TensorFlow is not installed: no TensorBoard logs")
    return _fit(config, run_dir, state, start_epoch, model, train_ds, test_ds, info, steps, replicas, micro,
                extra_callbacks, tensorboard=has_tensorflow, validation_ds=validation_ds[0] if validation_ds else None)


def _build_jax(config, info, steps, micro, preprocessing):
    """Like `_build`, with the images' preprocessing on the device; the whole
    step is always jitted on JAX (--jit_compile is TensorFlow's choice)."""
    from sngm_keras.models import build_model
    from sngm_keras.training.factory import compile_for_training
    from sngm_keras.training.jax_data import PreprocessedMicroBatchModel

    net = build_model(config.model, info.num_classes, info.image_shape, seed=config.seed)
    model = PreprocessedMicroBatchModel(net, micro, preprocessing, noise_scale=config.noise_scale)
    return compile_for_training(model, config, steps, True)


def _reached(model, max_updates):
    from sngm_keras.training.factory import inner_optimizer

    return bool(max_updates) and int(inner_optimizer(model.optimizer).iterations.numpy()) >= max_updates


def _build(config, strategy, info, steps, micro):
    from sngm_keras.accumulation import MicroBatchModel
    from sngm_keras.models import build_model
    from sngm_keras.training.factory import compile_for_training

    # Under a strategy XLA cannot compile the all-reduce: compile the
    # micro-batch loop alone there, the whole step on one device.
    jit_whole_step = config.jit_compile and strategy.num_replicas_in_sync == 1
    with strategy.scope():
        net = build_model(config.model, info.num_classes, info.image_shape, seed=config.seed)
        model = MicroBatchModel(net, micro, jit_compile=config.jit_compile and not jit_whole_step,
                                noise_scale=config.noise_scale)
        return compile_for_training(model, config, steps, jit_whole_step)


def _validation_summary(rows, num_validation):
    """The validation split's figures: after the last update, and the best of all evaluations."""
    if not rows:
        return {"num_validation": num_validation}
    accuracies = [float(r["validation_accuracy"]) for r in rows]
    return {
        "validation_accuracy": accuracies[-1],
        "validation_loss": float(rows[-1]["validation_loss"]),
        "best_validation_accuracy": max(accuracies),
        "num_validation": num_validation,
    }


def _label(config):
    return f"{config.optimizer.upper()}, B={config.batch_size}"


def curves_title(config):
    """curves.png's title: what was trained, with what (and the preset's name)."""
    title = (f"{config.model}, {config.optimizer.upper()}, B = {config.batch_size}, "
             f"learning rate {config.learning_rate:g}")
    return f"{config.preset}\n{title}" if config.preset else title


def _summary(config, model, recorder, rows, results, replicas, micro, info):
    from sngm_keras.training.factory import inner_optimizer

    optimizer = inner_optimizer(model.optimizer)
    updates = int(optimizer.iterations.numpy())
    tested = [float(r["test_accuracy"]) for r in rows if r.get("test_accuracy") not in (None, "")]
    test_accuracy = float(results["accuracy"])
    epochs_done = int(rows[-1]["epoch"]) - recorder.stopped_in_epoch if rows else 0
    examples = updates * config.batch_size
    return {
        # A run stopped by --max_updates before its last epoch is not
        # complete: rerun without it (or with a larger one) to continue.
        "complete": epochs_done >= config.epochs,
        "stopped_at_max_updates": bool(config.max_updates) and updates >= config.max_updates,
        "test_accuracy": test_accuracy,
        "best_test_accuracy": max(tested + [test_accuracy]),
        "test_loss": float(results["loss"]),
        "train_loss": float(rows[-1]["train_loss"]) if rows else None,
        "updates": updates,
        "epochs_completed": epochs_done,
        "grad_per_n": examples / info.num_train,
        "examples_per_second": examples / recorder.train_seconds if recorder.train_seconds else None,
        "wall_seconds": recorder.wall_seconds,
        "train_seconds": recorder.train_seconds,
        "skipped_steps": int(optimizer.skipped_steps.numpy()),
        "replicas": replicas,
        "micro_batch_size": micro,
        "num_train": info.num_train,
        "num_test": info.num_test,
        "started_utc": recorder.started_utc,
        "finished_utc": utc_now(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "sngm_keras": package_version(),
        "git": git_commit(),
        **_versions(),
        "flags": config.to_dict(),
        **_noise_scale_summary(rows),
    }


def _noise_scale_summary(rows):
    """The last epoch's noise-scale metrics (None when not measured; the
    noise scale also None while its |G|^2 average is not positive)."""
    from sngm_keras.noise_scale import NOISE_SCALE_KEYS

    last = rows[-1] if rows else {}
    values = {k: float(last[k]) if last.get(k) not in (None, "") else None for k in NOISE_SCALE_KEYS}
    scale = values["gradient_noise_scale"]
    if scale is not None and not math.isfinite(scale):
        values["gradient_noise_scale"] = None
    return values
