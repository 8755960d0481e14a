"""Keras callbacks of a training run: per-epoch history and checkpoints (and
the stop after --max_updates), the run's progress bar, and a warning when
non-finite steps were skipped (the validation split's evaluations are
`sngm_keras.training.validation_monitor`'s)."""

import logging
import time

import keras

from sngm_keras.noise_scale import NOISE_SCALE_KEYS
from sngm_keras.training.factory import inner_optimizer
from sngm_keras.training.stopping import StopRequested

log = logging.getLogger("sngm_keras")


def scalar_value(x):
    return float(keras.ops.convert_to_numpy(x))


def epoch_means(model):
    """The model's Mean metrics (the loss tracker, accuracy, ...), whose
    (total, count) make an epoch's training figures."""
    found = []

    def walk(metric):
        if isinstance(metric, keras.metrics.Mean):
            found.append(metric)
        for inner in getattr(metric, "metrics", None) or []:  # CompileMetrics holds the compiled ones
            walk(inner)

    for metric in model.metrics:
        walk(metric)
    return found


def replica_parts(model, variable):
    """The parts of a metric variable that a tf.distribute strategy on one
    host keeps on each of its replicas (summed when read), or None: one
    device, JAX, or several hosts (whose parts this host does not hold)."""
    strategy = getattr(model, "distribute_strategy", None)
    parts = getattr(getattr(variable, "value", None), "values", None)
    if strategy is None or not isinstance(parts, tuple) or not 1 < len(parts) == strategy.num_replicas_in_sync:
        return None
    return parts


def epoch_sums(model):
    """The Mean metrics' (total, count); and on a strategy's replicas, each one's part of them (else None)."""
    means = epoch_means(model)
    sums = [[scalar_value(m.total), scalar_value(m.count)] for m in means]
    parts = [[replica_parts(model, v) for v in (m.total, m.count)] for m in means]
    if any(p is None for pair in parts for p in pair):
        return sums, None
    return sums, [[[scalar_value(p) for p in pair] for pair in metric] for metric in parts]


def add_epoch_sums(model, sums, replica_sums=None):
    """Adds `epoch_sums`' figures to the Mean metrics. With a part for each
    replica, each replica's to its own: adding a replicated variable a whole
    sum spreads it evenly over the replicas, and the epoch's later sums then
    round otherwise than an uninterrupted epoch's."""
    for i, metric in enumerate(epoch_means(model)):
        for j, variable in enumerate((metric.total, metric.count)):
            parts = replica_parts(model, variable) if replica_sums else None
            if parts is not None and len(parts) == len(replica_sums[i][j]):
                for part, value in zip(parts, replica_sums[i][j]):
                    part.assign_add(value)
            else:
                variable.assign_add(sums[i][j])


class EpochRecorder(keras.callbacks.Callback):
    """Writes a history row and a checkpoint at the end of every epoch, a
    checkpoint within epochs every `checkpoint_every` updates; ends training
    after `max_updates` updates, checkpointed there if within an epoch; and
    checkpoints where `stop_request` (anything with `is_set()`) asks training
    to stop, then raises `StopRequested` out of `fit` at once.

    A checkpoint within an epoch holds what its end needs: the batches done,
    the epoch's Mean metric sums and its time so far. `resume` is such a
    state: fit then starts at epoch `resume["epoch"]` (0-based) with the
    epoch's first `resume["batch"]` batches left out, and after the first
    update the sums are added back, so the epoch's figures are those of an
    uninterrupted epoch. `batch_size_of(epoch)` gives history.csv's
    batch_size, `extra_state()` more of each checkpoint's state (a growing
    batch's). Training time excludes evaluation, so
    `examples_per_second` is the training throughput. `started_utc`, when
    the run first started, is kept in the state so a resumed run reports it
    too."""

    def __init__(
        self,
        run_dir,
        rows,
        examples_after,
        num_train,
        base_wall_seconds,
        base_train_seconds,
        validation=None,
        started_utc=None,
        steps_per_epoch=None,
        checkpoint_every=0,
        keep_checkpoints=2,
        resume=None,
        stop_request=None,
        max_updates=None,
        batch_size_of=None,
        examples_per_epoch=None,
        extra_state=None,
    ):
        super().__init__()
        self.batch_size_of = batch_size_of  # epoch -> its batch size (history.csv's batch_size)
        self.examples_per_epoch = examples_per_epoch  # default: those of the updates of an epoch from the start
        self.extra_state = extra_state  # () -> more of the checkpoint's state (a growing batch's)
        self.validation = validation  # a ValidationMonitor, whose time within epochs is not training
        self.run_dir = run_dir
        self.rows = rows
        self.examples_after = examples_after  # updates -> training examples they used
        self.num_train = num_train
        self.wall_seconds = base_wall_seconds
        self.train_seconds = base_train_seconds
        self.started_utc = started_utc
        self.steps_per_epoch = steps_per_epoch  # of a whole epoch; Keras' params count a resumed one's rest
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.resume = resume if resume and resume.get("batch") else None
        self.stop_request = stop_request
        self.max_updates = max_updates  # where training stops, checkpointed there if within an epoch

    stopped_in_epoch = False  # the last epoch was cut short (--max_updates)

    def on_train_begin(self, logs=None):
        self._updates = int(scalar_value(inner_optimizer(self.model.optimizer).iterations))
        self._steps = self.steps_per_epoch or self.params.get("steps")
        if self.stop_request is not None:
            self.stop_request.training = True

    def on_train_end(self, logs=None):
        if self.stop_request is not None:
            self.stop_request.training = False

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._train_end = None
        self._epoch = epoch
        carried = self.resume if self.resume is not None and self.resume["epoch"] == epoch else None
        self._carried = carried or {}
        self._batches = self._carried.get("batch", 0)
        self._sums_to_add = self._carried.get("epoch_metric_sums")

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        self._updates += 1
        if self._sums_to_add:
            add_epoch_sums(self.model, self._sums_to_add, self._carried.get("epoch_metric_replica_sums"))
            self._sums_to_add = None
        stop = self.stop_request is not None and self.stop_request.is_set()
        due = self.checkpoint_every and self._updates % self.checkpoint_every == 0
        if self.max_updates and self._updates >= self.max_updates:
            # Each training batch is one update: no step waits for a read of the optimizer's count.
            self.model.stop_training = True
            due = True
        if (stop or due) and self._batches < self._steps:
            state = self._save_within_epoch()
            if stop:
                raise StopRequested(state)

    def _train_time_so_far(self, now):
        spent = (self._train_end or now) - self._epoch_start
        return spent - (self.validation.epoch_seconds if self.validation is not None else 0.0)

    def _save_within_epoch(self):
        now = time.perf_counter()
        model = self.model
        # The totals resumed from already hold the time the epoch had before the resume.
        train_time, wall_time = self._train_time_so_far(now), now - self._epoch_start
        # The optimizer's count, not the batches: a loss-scaled step that overflowed made no update.
        updates = int(scalar_value(inner_optimizer(model.optimizer).iterations))
        sums, replica_sums = epoch_sums(model)
        state = {
            **self._state(updates),
            "epoch": self._epoch,
            "batch": self._batches,
            "wall_seconds": self.wall_seconds + wall_time,
            "train_seconds": self.train_seconds + train_time,
            "epoch_train_seconds": self._carried.get("epoch_train_seconds", 0.0) + train_time,
            "epoch_wall_seconds": self._carried.get("epoch_wall_seconds", 0.0) + wall_time,
            "epoch_metric_sums": sums,
            **({"epoch_metric_replica_sums": replica_sums} if replica_sums else {}),
        }
        self.run_dir.save_checkpoint(model, state, keep=self.keep_checkpoints)
        return state

    def _state(self, updates):
        state = {
            "updates": updates,
            "steps_per_epoch": self._steps,
            "examples_per_epoch": self.examples_per_epoch or (self._steps and self.examples_after(self._steps)) or None,
            "started_utc": self.started_utc,
            **(self.extra_state() if self.extra_state is not None else {}),
        }
        tracker = getattr(self.model, "noise_scale_tracker", None)
        if tracker is not None:  # Keras saves no metric's state with the weights
            state["noise_scale_state"] = [float(scalar_value(v)) for v in tracker.variables]
        return state

    def on_test_begin(self, logs=None):
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        now = time.perf_counter()
        train_time = self._train_time_so_far(now)
        if self.validation is not None and self._train_end is None:
            # The evaluation at its end, when no test evaluation marked where
            # training ended (it ran after that).
            train_time -= self.validation.end_seconds
        self.train_seconds += train_time
        self.wall_seconds += now - self._epoch_start
        optimizer = inner_optimizer(self.model.optimizer)
        updates = int(scalar_value(optimizer.iterations))
        row = {
            "epoch": epoch + 1,
            "updates": updates,
            "grad_per_n": round(self.examples_after(updates) / self.num_train, 6),
            "learning_rate": scalar_value(optimizer.learning_rate),
            "batch_size": self.batch_size_of(epoch) if self.batch_size_of is not None else "",
            "train_loss": logs.get("loss"),
            "train_accuracy": logs.get("accuracy"),
            "test_loss": logs.get("val_loss", ""),
            "test_accuracy": logs.get("val_accuracy", ""),
            "validation_loss": logs.get("validation_loss", ""),
            "validation_accuracy": logs.get("validation_accuracy", ""),
            "gradient_norm": scalar_value(optimizer.gradient_norm) if hasattr(optimizer, "gradient_norm") else "",
            "skipped_steps": int(scalar_value(optimizer.skipped_steps)) if hasattr(optimizer, "skipped_steps") else "",
            "epoch_seconds": round(self._carried.get("epoch_train_seconds", 0.0) + train_time, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            **{k: logs.get(k, "") for k in NOISE_SCALE_KEYS},
        }
        self.rows.append(row)
        self.stopped_in_epoch = bool(self._steps) and self._batches < self._steps
        if not self.stopped_in_epoch:
            # A cut epoch (--max_updates) has its checkpoint where it was cut,
            # written before the epoch's end evaluated anything.
            state = {
                **self._state(updates),
                "epoch": epoch + 1,
                "wall_seconds": self.wall_seconds,
                "train_seconds": self.train_seconds,
            }
            self.run_dir.save_checkpoint(self.model, state, keep=self.keep_checkpoints)
        self.run_dir.write_history(self.rows)
        if self.stop_request is not None and self.stop_request.is_set() and not self.stopped_in_epoch:
            raise StopRequested(dict(state, batch=0))


class RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, headed by the run's epoch count: a run resumed
    within an epoch, or grown in stretches of one batch size, is fitted in
    several `fit` calls, and Keras' own bar would head each with the call's
    last epoch ("Epoch 154/154"). Under `max_updates`, it counts the updates
    the run makes: an epoch's bar ends at the updates made in it (Keras' own
    jumps to the epoch's full count when training stops early)."""

    def __init__(self, epochs, max_updates=None):
        super().__init__()
        self.run_epochs = epochs
        self.max_updates = max_updates

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.run_epochs
        self._steps = params["steps"]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._updates = int(scalar_value(inner_optimizer(self.model.optimizer).iterations))

    def on_epoch_begin(self, epoch, logs=None):
        if self.max_updates:
            self.target = min(self._steps, max(self.max_updates - self._updates, 1))
        super().on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._updates += 1
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.max_updates:
            self.target = self.progbar.target = self.seen
        super().on_epoch_end(epoch, logs)


class SkippedStepsMonitor(keras.callbacks.Callback):
    """Logs a warning when the optimizer skipped non-finite steps in an epoch."""

    def on_train_begin(self, logs=None):
        self._seen = self._count()

    def _count(self):
        optimizer = inner_optimizer(self.model.optimizer)
        return int(scalar_value(optimizer.skipped_steps)) if hasattr(optimizer, "skipped_steps") else 0

    def on_epoch_end(self, epoch, logs=None):
        count = self._count()
        if count > self._seen:
            log.warning(
                "epoch %d: %d step(s) with a non-finite gradient skipped (%d in all)",
                epoch + 1,
                count - self._seen,
                count,
            )
        self._seen = count
