"""Growing the batch of a `MicroBatchModel` during `fit`, by the measured noise scale.

`BatchGrowth` holds the run's batch of every epoch so far and decides the
next one at each epoch's end from the model's gradient noise scale
(`sngm_keras.batch_growth.grown_batch_size`). The batch changes only between
epochs, and only between fits: `fit_with_batch_growth` fits one stretch of
epochs at one batch size, and when `BatchGrowth.callback` has grown the
batch at an epoch's end it stops that fit; the next fit takes the input at
the new size (`train_data(batch_size, epoch, batch)`, a new tf.data
pipeline or PyDataset) with a new train function, traced anew with the
schedule's new stretch (`ExampleCountedSchedule`). Each step still runs
forward and backward on micro-batches of the model's `micro_batch_size`: a
larger batch is more of them.

    growth = BatchGrowth(start=128, maximum=4096, multiple=128, examples_per_epoch=44928)
    schedule = growth.schedule(PolynomialWarmup(0.1, total_steps=epochs * growth.steps_per_epoch(128)))
    model.compile(optimizer=sngm_keras.SNGM(schedule), ...)
    fit_with_batch_growth(model, lambda size, epoch, batch: make_input(size, epoch), growth, epochs)

Every epoch trains on the same `examples_per_epoch` examples whatever its
batch (its last batch holds the rest), and the schedule counts in examples:
its rate at an update is the base schedule's at the updates the run's first
batch would have needed for the same examples, times (B / B0)^k
(`lr_scaling`). Under several workers `agree` makes every worker take the
same batch (e.g. the chief's); the noise scale is computed from all-reduced
sums, so it is the same on every worker anyway.
"""

import keras
from keras import ops

from sngm_keras import batch_growth as rule


@keras.saving.register_keras_serializable(package="sngm_keras")
class ExampleCountedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`base` (a schedule counted in updates of `base_batch_size`, or a
    constant rate) counted in examples instead, times `factor`.

    The update `u` of the stretch of epochs that starts at update
    `first_update`, epoch `first_epoch`, at `batch_size`, is batch `i` of
    epoch `e`; `base` is read at `e * base_steps_per_epoch + min(i *
    batch_size / base_batch_size, base_steps_per_epoch - 1)`: the update of
    the first batch size that starts at the same example, within the same
    epoch. At `batch_size == base_batch_size` that is `u` itself."""

    def __init__(self, base, base_batch_size, base_steps_per_epoch):
        if isinstance(base, dict):
            base = keras.saving.deserialize_keras_object(base)
        self.base = base
        self.base_batch_size = int(base_batch_size)
        self.base_steps_per_epoch = int(base_steps_per_epoch)
        self.set_stretch(0, 0, self.base_batch_size, self.base_steps_per_epoch, 1.0)

    def set_stretch(self, first_epoch, first_update, batch_size, steps_per_epoch, factor):
        """The stretch the next traced step is in; Python numbers, read when it traces."""
        self.first_epoch, self.first_update = int(first_epoch), int(first_update)
        self.batch_size, self.steps_per_epoch, self.factor = int(batch_size), int(steps_per_epoch), float(factor)

    def base_step(self, step):
        u = ops.convert_to_tensor(step) - self.first_update
        epoch = self.first_epoch + u // self.steps_per_epoch
        within = ops.cast(u % self.steps_per_epoch, "float32") * (self.batch_size / self.base_batch_size)
        within = ops.minimum(within, float(self.base_steps_per_epoch - 1))
        return ops.cast(epoch * self.base_steps_per_epoch, "float32") + within

    def __call__(self, step):
        rate = self.base(self.base_step(step)) if callable(self.base) else ops.convert_to_tensor(self.base, "float32")
        return rate * self.factor if self.factor != 1.0 else rate

    def get_config(self):
        base = self.base if not callable(self.base) else keras.saving.serialize_keras_object(self.base)
        return {
            "base": base,
            "base_batch_size": self.base_batch_size,
            "base_steps_per_epoch": self.base_steps_per_epoch,
        }


class BatchGrowth:
    """The batch of every epoch of a run that grows it by the noise scale.

    Args:
        start: B0, the first epoch's batch.
        maximum: the largest batch.
        multiple: the micro-batch times the replicas: every batch is
            `multiple` x 2^k (or `start`, or `maximum`), and a multiple of it.
        examples_per_epoch: what every epoch trains on, at any batch.
        factor: the target batch is `factor` x B_simple.
        lr_scaling: "none", "sqrt" or "linear": the rate times (B / B0)^k.
        agree: batch size -> batch size, the one every worker takes (default:
            its own).
    """

    def __init__(self, start, maximum, multiple, examples_per_epoch, factor=1.0, lr_scaling="none", agree=None):
        if lr_scaling not in rule.LR_SCALINGS:
            raise ValueError(f"lr_scaling must be one of {', '.join(rule.LR_SCALINGS)}, got {lr_scaling!r}")
        if not (0 < multiple and start % multiple == 0 and maximum % multiple == 0 and start <= maximum):
            raise ValueError(f"need start <= maximum, both multiples of {multiple}; got {start} and {maximum}")
        if not factor > 0:
            raise ValueError(f"factor must be positive, got {factor}")
        self.start, self.maximum, self.multiple = int(start), int(maximum), int(multiple)
        self.examples_per_epoch, self.factor, self.lr_scaling = int(examples_per_epoch), float(factor), lr_scaling
        self.agree = agree or (lambda size: size)
        self.epoch_batch_sizes = [self.start]  # epoch e's batch; the last: the epoch in progress or to come
        self._schedule = None
        self.callback = _GrowthCallback(self)

    def steps_per_epoch(self, batch_size):
        return rule.batches(self.examples_per_epoch, batch_size)

    def batch_size_at(self, epoch):
        sizes = self.epoch_batch_sizes
        return sizes[min(epoch, len(sizes) - 1)]

    def examples_after(self, updates):
        return rule.examples_after(updates, self.epoch_batch_sizes, self.examples_per_epoch)

    def schedule(self, base):
        """`base` (counted in updates at `start`) as the `ExampleCountedSchedule` this growth sets."""
        self._schedule = ExampleCountedSchedule(base, self.start, self.steps_per_epoch(self.start))
        return self._schedule

    def grow(self, epoch, noise_scale):
        """At the end of epoch `epoch` (0-based): records and returns the batch of the next one."""
        current = self.batch_size_at(epoch)
        proposed = rule.grown_batch_size(
            current, noise_scale, multiple=self.multiple, start=self.start, maximum=self.maximum, factor=self.factor
        )
        size = int(self.agree(proposed))
        del self.epoch_batch_sizes[epoch + 1 :]
        self.epoch_batch_sizes.append(size)
        return size

    def start_stretch(self, model, epoch, batch=0):
        """Before a fit from batch `batch` of `epoch`: the schedule's stretch
        from there, and a train function traced anew (its batch and its rate)."""
        del self.epoch_batch_sizes[epoch + 1 :]
        while len(self.epoch_batch_sizes) <= epoch:
            self.epoch_batch_sizes.append(self.epoch_batch_sizes[-1])
        size = self.batch_size_at(epoch)
        if self._schedule is not None:
            updates = int(ops.convert_to_numpy(_inner(model.optimizer).iterations))
            factor = rule.lr_factor(size, self.start, self.lr_scaling)
            self._schedule.set_stretch(epoch, updates - batch, size, self.steps_per_epoch(size), factor)
        model.train_function = None  # fit makes it anew, traced at this batch and rate
        return size

    def state(self):
        return {"epoch_batch_sizes": list(self.epoch_batch_sizes)}

    def restore(self, state, epoch):
        """The batches of a checkpoint's `state()`, up to `epoch` (where it resumes)."""
        sizes = [int(s) for s in state["epoch_batch_sizes"]][: epoch + 1]
        self.epoch_batch_sizes = sizes or [self.start]


def _inner(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def noise_scale_of(model):
    """The model's B_simple now, or None where it is not measured."""
    tracker = getattr(model, "noise_scale_tracker", None)
    if tracker is None:
        return None
    value = tracker.result().get("gradient_noise_scale")
    return None if value is None else float(ops.convert_to_numpy(value))


class _GrowthCallback(keras.callbacks.Callback):
    """Decides the next epoch's batch at each epoch's end, adds `batch_size`
    (this epoch's) to the logs, and stops the fit when the batch grows."""

    def __init__(self, growth):
        super().__init__()
        self.growth = growth
        self.grew_at = None  # the epoch at whose end the fit was stopped to grow

    def on_train_begin(self, logs=None):
        self.grew_at = None

    def on_epoch_end(self, epoch, logs=None):
        current = self.growth.batch_size_at(epoch)
        if logs is not None:
            logs["batch_size"] = current
        if self.growth.grow(epoch, noise_scale_of(self.model)) != current:
            self.grew_at = epoch
            self.model.stop_training = True


def fit_with_batch_growth(
    model,
    train_data,
    growth,
    epochs,
    initial_epoch=0,
    initial_batch=0,
    callbacks=(),
    before_fit=None,
    keep_going=None,
    **fit_kwargs,
):
    """`model.fit` from batch `initial_batch` of epoch `initial_epoch` to
    `epochs`, one fit per stretch of epochs at one batch size.

    `train_data(batch_size, epoch, batch)`: the input in batches of
    `batch_size` from batch `batch` of `epoch`, to the end of that epoch only
    when `batch` > 0, else to the last epoch. `before_fit(batch_size,
    steps_per_epoch)` runs before each fit (callbacks that count an epoch's
    steps); `keep_going()`, when given, before each fit too: False ends the
    training. A fit stopped by anything but the growth ends it. Returns the
    last fit's History (None when nothing was left to fit)."""
    epoch, batch, history = initial_epoch, initial_batch, None
    while epoch < epochs and (keep_going is None or keep_going()):
        size = growth.start_stretch(model, epoch, batch)
        steps = growth.steps_per_epoch(size)
        if before_fit is not None:
            before_fit(size, steps)
        last = epoch + 1 if batch else epochs
        history = model.fit(
            train_data(size, epoch, batch),
            epochs=last,
            initial_epoch=epoch,
            steps_per_epoch=steps - batch,
            callbacks=[growth.callback, *callbacks],
            **fit_kwargs,
        )
        ended = growth.callback.grew_at
        if ended is None:
            if model.stop_training or batch == 0:
                break  # stopped by another callback, or every epoch done
            ended = epoch  # the rest of a resumed epoch
        epoch, batch = ended + 1, 0
    return history
