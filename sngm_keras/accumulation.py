"""Large effective batches from micro-batches: one optimizer step per batch.

`MicroBatchModel(model, micro_batch_size=b)` trains `model` with `fit` on
batches of the effective size B: each replica splits its share of the batch
into micro-batches of b, runs forward and backward on one micro-batch at a
time in a loop (so activation memory follows b, not B), sums the gradients
locally, and hands their mean to the optimizer once: the mean over the
micro-batches of the gradient of each one's mean loss. The optimizer
all-reduces that gradient across replicas once per update, as a sum of
gradients of losses that Keras has scaled by 1 / replicas, so SNGM, LARS and
any clipping of `sngm_keras` optimizers see the mean gradient of the whole
batch of B -- the paper's mini-batch gradient, not the sum over its
micro-batches. BatchNorm statistics follow each micro-batch, as in the paper.

The optimizer's `iterations`, and so every learning-rate schedule, advance
once per update, not once per micro-batch. `PreprocessedMicroBatchModel`
is the same with its inputs preprocessed on the device first (the PyDataset
feed's uint8 images, `sngm_keras.data.pydatasets`).

Works with any Keras optimizer, on one device, under
`tf.distribute.MirroredStrategy` and `MultiWorkerMirroredStrategy`
(TensorFlow backend), and on the JAX backend (one device or
`keras.distribution.DataParallel`). On JAX with several devices the result is
the same, but XLA places the cross-device sum inside the micro-batch loop (one
all-reduce per micro-batch), and BatchNorm normalizes each micro-batch over
all its devices' rows, Keras' JAX convention. XLA: on TensorFlow the
micro-batch loop (forward, backward and the sum of gradients of all
micro-batches of the replica) is compiled when `jit_compile=True` is given to
the wrapper; the optimizer step runs outside it, because under tf.distribute
it holds the cross-replica all-reduce and `merge_call`, which XLA cannot
compile. With a single device, `model.compile(jit_compile=True)` compiles the
whole step instead.

Gradient noise scale: with `noise_scale=True` (the default) each step also
measures McCandlish et al.'s B_simple (`sngm_keras.noise_scale`) from the
sum of squares of every micro-batch's gradient and the squared norm of the
step's gradient, before the optimizer's weight decay, at the cost of one sum
of squares per micro-batch and one all-reduce of a scalar: the metrics
`gradient_noise_scale`, `gradient_sq_norm_ema` and `gradient_variance_ema`.
The small batch is a micro-batch on one replica (b) on TensorFlow, and a
micro-batch over all devices (R x b) on JAX, whose step takes each
micro-batch's gradient over all its devices; the large batch is B. With a
single small batch per step (TensorFlow: one micro-batch on one replica;
JAX: one micro-batch) there is nothing to compare: the metrics are absent and
one warning says why. Under a tf.distribute strategy with several replicas
the step's gradient is whole only inside the optimizer, after its all-reduce:
there the measure needs an `sngm_keras` optimizer (SNGM, MSGD, LARS).
"""

import logging

import keras

from sngm_keras.batch_split import check_fit_batches, num_replicas
from sngm_keras.checks import check_positive_int
from sngm_keras.noise_scale import NOISE_SCALE_KEYS, GradientNoiseScale

log = logging.getLogger("sngm_keras")


@keras.saving.register_keras_serializable(package="sngm_keras")
class MicroBatchModel(keras.Model):
    """Wraps `model` so that `fit` accumulates gradients over micro-batches.

    Args:
        model: the `keras.Model` to train; `MicroBatchModel.model` is it, to
            save or evaluate on its own.
        micro_batch_size: b, examples per forward/backward pass on each
            replica. Every batch given to `fit` must hold a multiple of
            b x replicas examples: checked before training where the batch
            size is static, by the step as it runs where it is not (a
            dataset batched without `drop_remainder`, whose last batch then
            must also split).
        jit_compile: compile the micro-batch loop with XLA (TensorFlow).
        noise_scale: measure the gradient noise scale (see the module
            docstring); `noise_scale_tracker` holds it, None when off.
        noise_scale_decay: decay of its exponential moving averages.

    Example:
        ```python
        strategy = tf.distribute.MirroredStrategy()
        with strategy.scope():
            model = MicroBatchModel(resnet20(), micro_batch_size=128)
            model.compile(optimizer=sngm_keras.SNGM(1.6, weight_decay=1e-4), loss=...)
        model.fit(train.batch(4096, drop_remainder=True))
        ```
    """

    def __init__(self, model, micro_batch_size, jit_compile=False, noise_scale=True, noise_scale_decay=0.99, **kwargs):
        kwargs.setdefault("name", f"{model.name}_microbatch")
        super().__init__(**kwargs)
        self.model = model
        self.micro_batch_size = check_positive_int("micro_batch_size", micro_batch_size)
        self.micro_jit_compile = bool(jit_compile)
        self.noise_scale_decay = noise_scale_decay
        self.noise_scale_tracker = GradientNoiseScale(noise_scale_decay) if noise_scale else None
        self._noise_scale_warned = False
        if model.built:  # so load_weights works before the first step
            self.built = True

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def build(self, input_shape):
        if not self.model.built:
            self.model.build(input_shape)
        self.built = True

    def fit(self, x=None, y=None, batch_size=None, **kwargs):
        check_fit_batches(x, batch_size, self.micro_batch_size, num_replicas(self))
        return super().fit(x, y, batch_size=batch_size, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Private Keras hook (pinned by tests/test_private_api_pins.py):
        # keras-team/keras#20585, Keras 3 reduces the first distributed batch
        # with MEAN across replicas to build the model, which
        # MultiWorkerMirroredStrategy cannot do eagerly, and no public hook
        # lets a model pick the batch it is built from. A local shard has the
        # same structure and shapes, and is all the build needs.
        if iterator is not None and keras.backend.backend() == "tensorflow":
            from sngm_keras._accumulation_tf import first_local_batch

            data_batch, iterator = first_local_batch(self.distribute_strategy, iterator), None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, *args):
        if keras.backend.backend() == "tensorflow":
            from sngm_keras import _accumulation_tf  # imports TensorFlow

            return _accumulation_tf.train_step(self, *args)
        if keras.backend.backend() == "jax":
            from sngm_keras import _accumulation_jax

            return _accumulation_jax.train_step(self, *args)
        raise NotImplementedError(f"MicroBatchModel does not support the {keras.backend.backend()} backend")

    def test_step(self, *args):
        logs = super().test_step(*args)
        # The noise scale is training's: no val_gradient_noise_scale.
        if keras.backend.backend() == "jax":
            logs, state = logs
            return {k: v for k, v in logs.items() if k not in NOISE_SCALE_KEYS}, state
        logs = {k: v for k, v in logs.items() if k not in NOISE_SCALE_KEYS}
        if keras.backend.backend() == "tensorflow":
            from sngm_keras import _accumulation_tf

            logs = _accumulation_tf.logs_for_strategy(logs)
        return logs

    def noise_scale_batches(self, small, big, reason_if_not=None):
        """Called by the train steps when they trace: (small, big) if the noise
        scale can be measured with these batch sizes, else None after one
        warning. Sets what the tracker reports."""
        tracker = self.noise_scale_tracker
        if tracker is None:
            return None
        if reason_if_not is None and not (big and small < big):
            if tracker.measured:  # an epoch's last, smaller batch: its steps are left out
                return None
            reason_if_not = (
                f"each step has a single small batch ({small} of B={big} examples); use a smaller micro_batch_size"
            )
        tracker.measured = reason_if_not is None
        if reason_if_not is None:
            return small, big
        if not self._noise_scale_warned:
            self._noise_scale_warned = True
            log.warning("gradient noise scale not measured: %s", reason_if_not)
        return None

    def get_config(self):
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "micro_batch_size": self.micro_batch_size,
            "jit_compile": self.micro_jit_compile,
            "noise_scale": self.noise_scale_tracker is not None,
            "noise_scale_decay": self.noise_scale_decay,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"], custom_objects=custom_objects)
        return cls(**config)


@keras.saving.register_keras_serializable(package="sngm_keras")
class PreprocessedMicroBatchModel(MicroBatchModel):
    """`MicroBatchModel` whose inputs go through `preprocessing` first.

    Takes what the PyDataset feed yields (`sngm_keras.data.pydatasets`:
    uint8 images and augmentation draws); `.model` is the network alone,
    taking normalized images like the tf.data feed's model (it is what
    final.keras holds). The preprocessing runs inside the jitted step, on
    each micro-batch, on the device.
    """

    def __init__(self, model, micro_batch_size, preprocessing, jit_compile=False, **kwargs):
        super().__init__(model, micro_batch_size, jit_compile=jit_compile, **kwargs)
        if isinstance(preprocessing, dict):
            preprocessing = keras.saving.deserialize_keras_object(preprocessing)
        self.preprocessing = preprocessing

    def call(self, inputs, training=None):
        return self.model(self.preprocessing(inputs, training=training), training=training)

    def build(self, input_shape):
        if not self.model.built:
            shape = input_shape["images"] if isinstance(input_shape, dict) else input_shape
            self.model.build(shape)
        self.built = True

    def get_config(self):
        return {**super().get_config(), "preprocessing": keras.saving.serialize_keras_object(self.preprocessing)}
