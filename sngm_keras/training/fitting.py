"""The fit of a run: from its checkpoint (checked to fit this run), with
the recorder, validation and stopping callbacks, to the last epoch or
--max_updates; then the test evaluation."""

import logging

from sngm_keras.training.config import ConfigError
from sngm_keras.training.config_checks import keras_verbosity
from sngm_keras.training.provenance import utc_now
from sngm_keras.training.validation_monitor import ValidationMonitor

log = logging.getLogger("sngm_keras")


def _check_epoch_layout(state, steps, examples, num_train, batch_size, run_dir):
    """Refuses a resume whose epochs would hold other batches than the run's
    first part did (other replicas, hence another epoch_multiple; or a
    checkpoint of a version that dropped each epoch's last partial batch):
    its schedule, counted in updates, would no longer fit."""
    saved = state.get("steps_per_epoch"), state.get("examples_per_epoch")
    if saved == (None, None):  # checkpoints before these fields: whole batches only, unless they fit this layout
        whole = num_train // batch_size
        if whole != steps and state.get("updates") == state["epoch"] * whole:
            saved = whole, whole * batch_size
    if saved != (None, None) and saved != (steps, examples):
        raise ConfigError(
            "model_dir",
            f"{run_dir.path}: its checkpoint was trained with epochs of {saved[0]} updates over {saved[1]} "
            f"examples, this run's epochs would take {steps} over {examples} (other replicas, or a checkpoint "
            "of a version that dropped each epoch's last partial batch); resume it as it was trained, or train "
            "it anew in another --model_dir",
        )


def _check_optimizer_restored(model, state, run_dir):
    """Keras loads the weights but skips, with a warning only, an optimizer
    state that does not fit the optimizer (one written by a version whose
    optimizer keeps other variables): the run would go on with its momentum
    and its schedule reset. Its update count tells."""
    import keras

    from sngm_keras.training.factory import inner_optimizer

    optimizer = inner_optimizer(model.optimizer)
    restored = int(keras.ops.convert_to_numpy(optimizer.iterations))
    if "updates" in state and restored != state["updates"]:
        raise ConfigError(
            "model_dir",
            f"{run_dir.path}: its checkpoint's optimizer state (after {state['updates']} updates) does not "
            f"fit this version's {optimizer.name}, which keeps other variables; resume it with the version "
            "that wrote it, or train it anew in another --model_dir",
        )


def _restore_noise_scale(model, state):
    """The noise scale's moving averages as the checkpoint left them, so a
    resumed run averages over the steps before the resume too."""
    tracker = getattr(model, "noise_scale_tracker", None)
    saved = state.get("noise_scale_state")
    if tracker is not None and saved is not None and len(saved) == len(tracker.variables):
        for variable, value in zip(tracker.variables, saved):
            variable.assign(value)


def fit_run(
    config, run_dir, state, start_epoch, model, datas, steps, seen, extra_callbacks, tensorboard, stop_request, growth
):
    """Resumes from `state`, fits to the last epoch (or --max_updates) and
    evaluates; returns (the epoch recorder, the history rows, the test
    results). `datas`: the input from the checkpoint on, and, when it is
    within an epoch, the input of the epochs after it (else None); with a
    `growth` (`BatchGrowth`), in its place `(batch size, epoch) -> the input
    from that epoch on`. `seen(updates)`: the training examples those
    updates used."""
    import keras

    from sngm_keras.training import callbacks as cb

    data, rest = datas
    start_batch = state.get("batch", 0) if state else 0
    if state:
        for name in state.get("passed_over", ()):
            log.warning("checkpoint %s is incomplete; resuming from the one before it", name)
        model.load_weights(run_dir.weights_path(state))
        if growth is None:
            _check_epoch_layout(state, steps, seen(steps), data.info.num_train, config.batch_size, run_dir)
        else:  # its epochs' steps follow its batches: their examples must be the same
            saved_steps = state.get("steps_per_epoch", steps)
            _check_epoch_layout(state, saved_steps, growth.examples_per_epoch, 0, config.batch_size, run_dir)
        _check_optimizer_restored(model, state, run_dir)
        _restore_noise_scale(model, state)
        where = f"epoch {start_epoch}" + (f", batch {start_batch} of epoch {start_epoch + 1}" if start_batch else "")
        log.info("resumed from %s (%s)", state["weights"], where)
    rows = [r for r in run_dir.read_history() if int(r["epoch"]) <= start_epoch]
    for row in rows:  # written before history.csv had the column: a run of one batch size
        if not row.get("batch_size") and growth is None:
            row["batch_size"] = str(config.batch_size)
    monitor = None
    if data.validation is not None:
        every = max(1, steps // config.validations_per_epoch)
        monitor = ValidationMonitor(run_dir, data.validation, every, seen, data.info.num_train, steps, state)
    recorder = cb.EpochRecorder(
        run_dir,
        rows,
        seen,
        data.info.num_train,
        base_wall_seconds=state["wall_seconds"] if state else 0.0,
        base_train_seconds=state["train_seconds"] if state else 0.0,
        validation=monitor,
        started_utc=(state or {}).get("started_utc") or utc_now(),
        steps_per_epoch=steps,
        checkpoint_every=config.updates_between_checkpoints(),
        keep_checkpoints=config.keep_checkpoints,
        resume=state,
        stop_request=stop_request,
        max_updates=config.max_updates,
        batch_size_of=growth.batch_size_at if growth else lambda epoch: config.batch_size,
        examples_per_epoch=growth.examples_per_epoch if growth else None,
        extra_state=growth.state if growth else None,
    )
    # The monitor first: the recorder's history row takes its epoch-end figures.
    callbacks = [*([monitor] if monitor else []), recorder, cb.SkippedStepsMonitor(), *extra_callbacks]
    callbacks.append(cb.RunProgbar(config.epochs, config.max_updates))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=run_dir.logs, update_freq="epoch"))
    else:
        log.info("TensorFlow is not installed: no TensorBoard logs")

    def fit(train, first_epoch, last_epoch, steps_per_epoch):
        if first_epoch < last_epoch and not _reached(model, config.max_updates):
            model.fit(
                train,
                epochs=last_epoch,
                initial_epoch=first_epoch,
                steps_per_epoch=steps_per_epoch,
                validation_data=data.test,
                validation_freq=config.eval_every,
                callbacks=callbacks,
                verbose=keras_verbosity(config.verbose),
                shuffle=False,
            )

    if growth is not None:
        _fit_growing(config, model, data, rest, growth, start_epoch, start_batch, callbacks, recorder, monitor)
    elif start_batch:  # the rest of the epoch the checkpoint is in, then the epochs after it
        fit(data.train, start_epoch, start_epoch + 1, steps - start_batch)
        if rest is not None and not recorder.stopped_in_epoch:
            fit(rest.train, start_epoch + 1, config.epochs, steps)
    else:
        fit(data.train, start_epoch, config.epochs, steps)
    return recorder, rows, model.evaluate(data.test, verbose=0, return_dict=True)


def _fit_growing(config, model, data, make_data, growth, start_epoch, start_batch, callbacks, recorder, monitor):
    """The fits of a growing batch (`batch_growth_fit.fit_with_batch_growth`):
    one per stretch of epochs at one batch, the epoch's steps and the
    validation's places within it set for each."""
    from sngm_keras.batch_growth_fit import fit_with_batch_growth

    def train_data(size, epoch, batch):
        return data.train if (epoch, batch) == (start_epoch, start_batch) else make_data(size, epoch).train

    def before_fit(size, steps):
        recorder.steps_per_epoch = steps
        if monitor is not None:
            monitor.steps_per_epoch, monitor.every = steps, max(1, steps // config.validations_per_epoch)

    fit_with_batch_growth(
        model,
        train_data,
        growth,
        config.epochs,
        initial_epoch=start_epoch,
        initial_batch=start_batch,
        callbacks=callbacks,
        before_fit=before_fit,
        keep_going=lambda: not recorder.stopped_in_epoch and not _reached(model, config.max_updates),
        validation_data=data.test,
        validation_freq=config.eval_every,
        verbose=keras_verbosity(config.verbose),
        shuffle=False,
    )


def _reached(model, max_updates):
    from sngm_keras.training.factory import inner_optimizer

    return bool(max_updates) and int(inner_optimizer(model.optimizer).iterations.numpy()) >= max_updates
