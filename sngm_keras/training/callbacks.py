"""Keras callbacks of a training run: per-epoch history and checkpoints,
update-count stopping, and a warning when non-finite steps were skipped."""

import logging
import time

import keras

from sngm_keras.training.factory import inner_optimizer

log = logging.getLogger("sngm_keras")


def _value(x):
    return float(keras.ops.convert_to_numpy(x))


class EpochRecorder(keras.callbacks.Callback):
    """Writes a history row and a checkpoint at the end of every epoch.

    Training time excludes evaluation, so `examples_per_second` is the
    training throughput."""

    def __init__(self, run_dir, rows, batch_size, num_train, base_wall_seconds, base_train_seconds,
                 is_chief=True):
        super().__init__()
        self.run_dir = run_dir
        self.rows = rows
        self.batch_size = batch_size
        self.num_train = num_train
        self.wall_seconds = base_wall_seconds
        self.train_seconds = base_train_seconds
        self.is_chief = is_chief

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs=None):
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        now = time.perf_counter()
        train_time = (self._train_end or now) - self._epoch_start
        self.train_seconds += train_time
        self.wall_seconds += now - self._epoch_start
        optimizer = inner_optimizer(self.model.optimizer)
        updates = int(_value(optimizer.iterations))
        row = {
            "epoch": epoch + 1,
            "updates": updates,
            "grad_per_n": round(updates * self.batch_size / self.num_train, 6),
            "learning_rate": _value(optimizer.learning_rate),
            "train_loss": logs.get("loss"),
            "train_accuracy": logs.get("accuracy"),
            "test_loss": logs.get("val_loss", ""),
            "test_accuracy": logs.get("val_accuracy", ""),
            "gradient_norm": _value(optimizer.gradient_norm) if hasattr(optimizer, "gradient_norm") else "",
            "skipped_steps": int(_value(optimizer.skipped_steps)) if hasattr(optimizer, "skipped_steps") else "",
            "epoch_seconds": round(train_time, 3),
            "wall_seconds": round(self.wall_seconds, 3),
        }
        self.rows.append(row)
        state = {"epoch": epoch + 1, "updates": updates, "wall_seconds": self.wall_seconds,
                 "train_seconds": self.train_seconds}
        self.run_dir.save_checkpoint(self.model, state, write=self.is_chief)
        if self.is_chief:
            self.run_dir.write_history(self.rows)


class StopAfterUpdates(keras.callbacks.Callback):
    """Ends training once the optimizer has made `max_updates` updates.

    The update count is read once, at the start; then each training batch is
    one update, so no step waits for a device-to-host read."""

    def __init__(self, max_updates):
        super().__init__()
        self.max_updates = max_updates

    def on_train_begin(self, logs=None):
        self._updates = int(_value(inner_optimizer(self.model.optimizer).iterations))

    def on_train_batch_end(self, batch, logs=None):
        self._updates += 1
        if self._updates >= self.max_updates:
            self.model.stop_training = True


class SkippedStepsMonitor(keras.callbacks.Callback):
    """Logs a warning when the optimizer skipped non-finite steps in an epoch."""

    def on_train_begin(self, logs=None):
        self._seen = self._count()

    def _count(self):
        optimizer = inner_optimizer(self.model.optimizer)
        return int(_value(optimizer.skipped_steps)) if hasattr(optimizer, "skipped_steps") else 0

    def on_epoch_end(self, epoch, logs=None):
        count = self._count()
        if count > self._seen:
            log.warning("epoch %d: %d step(s) with a non-finite gradient skipped (%d in all)",
                        epoch + 1, count - self._seen, count)
        self._seen = count
