"""Evaluations of a held-out validation split within epochs, a Keras callback."""

import logging
import time

import keras
import numpy as np

from sngm_keras.training.callbacks import scalar_value
from sngm_keras.training.factory import inner_optimizer

log = logging.getLogger("sngm_keras")


def dataset_labels(dataset):
    """The labels of an evaluation dataset (tf.data or `PyDataset` of `(x, y)` batches), in order."""
    if isinstance(dataset, keras.utils.PyDataset):
        batches = (dataset[i] for i in range(len(dataset)))
    else:
        batches = iter(dataset)
    return np.concatenate([np.asarray(keras.ops.convert_to_numpy(y)).reshape(-1) for _, y in batches])


def logits_loss_and_accuracy(logits, labels):
    """Mean sparse cross-entropy on logits and accuracy, in float64."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    labels = np.asarray(labels, np.int64)
    loss = -log_probs[np.arange(len(labels)), labels].mean()
    return float(loss), float(np.mean(logits.argmax(axis=1) == labels))


class ValidationMonitor(keras.callbacks.Callback):
    """Evaluates the held-out validation split every `every` updates and at
    the end of every epoch; writes each evaluation to validation.csv and adds
    `validation_loss` / `validation_accuracy` to the epoch's logs.

    It goes through `predict`, not `evaluate`: `evaluate` resets the compiled
    metrics, which in the middle of an epoch would cut the epoch's training
    loss short. Rows past the resumed checkpoint are dropped on resume, so
    the file always matches the checkpointed run."""

    def __init__(self, run_dir, dataset, every, examples_after, num_train, steps_per_epoch=None, resume=None):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch  # of a whole epoch; Keras' params count a resumed one's rest
        self.resume = resume if resume and resume.get("batch") else None  # a checkpoint within an epoch
        self.run_dir = run_dir
        self.dataset = dataset
        self.labels = dataset_labels(dataset)
        self.every = every
        self.examples_after = examples_after  # updates -> training examples they used
        self.num_train = num_train
        self.rows = []

    def on_train_begin(self, logs=None):
        self._updates = int(scalar_value(inner_optimizer(self.model.optimizer).iterations))
        self.rows = [r for r in self.run_dir.read_validation() if int(r["updates"]) <= self._updates]

    def _evaluate(self, epoch):
        if self.rows and int(self.rows[-1]["updates"]) == self._updates:
            return self.rows[-1]
        started = time.perf_counter()
        logits = keras.ops.convert_to_numpy(self.model.predict(self.dataset, verbose=0))
        loss, accuracy = logits_loss_and_accuracy(logits, self.labels)
        row = {
            "updates": self._updates,
            "epoch": round(epoch, 6),
            "grad_per_n": round(self.examples_after(self._updates) / self.num_train, 6),
            "validation_loss": loss,
            "validation_accuracy": accuracy,
        }
        self.rows.append(row)
        self.run_dir.write_validation(self.rows)
        self.last_seconds = time.perf_counter() - started
        return row

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._batches = self.resume["batch"] if self.resume is not None and self.resume["epoch"] == epoch else 0
        self.epoch_seconds = 0.0  # spent evaluating within the epoch's training
        self.end_seconds = 0.0  # spent on the evaluation at the epoch's end

    def on_train_batch_end(self, batch, logs=None):
        self._updates += 1
        self._batches += 1
        if self._batches % self.every == 0:  # the same places in every epoch
            steps = self.steps_per_epoch or (self.params.get("steps") if self.params else None)
            if steps and self._batches == steps:
                return  # the epoch's end evaluates it
            self.last_seconds = 0.0
            self._evaluate(self._epoch + (self._batches / steps if steps else 0))
            self.epoch_seconds += self.last_seconds

    def on_epoch_end(self, epoch, logs=None):
        self.last_seconds = 0.0
        row = self._evaluate(epoch + 1)
        self.end_seconds = self.last_seconds
        if logs is not None:
            logs["validation_loss"] = row["validation_loss"]
            logs["validation_accuracy"] = row["validation_accuracy"]
