"""TensorFlow train step of `MicroBatchModel`: a while loop over micro-batches."""

import keras
import tensorflow as tf
from keras import tree
from keras.src.losses import loss as loss_module
from keras.src.trainers.data_adapters import data_adapter_utils


def _split(structure, micro_batch_size):
    def split(t):
        if t is None:
            return None
        return tf.reshape(t, tf.concat([[-1, micro_batch_size], tf.shape(t)[1:]], 0))

    return tree.map_structure(split, structure)


def _take(structure, i):
    return tree.map_structure(lambda t: None if t is None else t[i], structure)


def _gradient_sum(model, xs, ys, sws, num_micro):
    """Forward and backward over every micro-batch; returns the summed
    gradients, the summed loss and the stacked predictions."""
    trainable = model.trainable_weights

    def body(i, grad_sum, loss_sum, preds):
        x, y, sw = _take(xs, i), _take(ys, i), _take(sws, i)
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sw, training=True)
            scaled = model.optimizer.scale_loss(loss) if model.optimizer is not None else loss
        grads = tape.gradient(scaled, trainable)
        grad_sum = [s + tf.cast(g, s.dtype) for s, g in zip(grad_sum, grads)]
        preds = tree.map_structure(lambda ta, p: ta.write(i, tf.cast(p, tf.float32)), preds, y_pred)
        return i + 1, grad_sum, loss_sum + tf.cast(loss, tf.float32), preds

    # Predictions are kept (B x classes floats) so metrics see the whole batch.
    output_spec = model.compute_output_spec(
        tree.map_structure(lambda t: keras.KerasTensor(t.shape[1:], t.dtype), xs)
    )
    pred_arrays = tree.map_structure(lambda s: tf.TensorArray(tf.float32, size=num_micro), output_spec)
    zeros = [tf.zeros(v.shape, dtype=v.dtype) for v in trainable]
    _, grad_sum, loss_sum, preds = tf.while_loop(
        lambda i, *_: i < num_micro,
        body,
        (tf.constant(0), zeros, tf.constant(0.0), pred_arrays),
        parallel_iterations=1,
    )
    preds = tree.map_structure(lambda ta: _merge_micro(ta.stack()), preds)
    return grad_sum, loss_sum, preds


def _merge_micro(t):
    shape = tf.shape(t)
    return tf.reshape(t, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))


def train_step(model, data):
    x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
    b = model.micro_batch_size
    batch = tf.shape(next(t for t in tree.flatten(x) if t is not None))[0]
    tf.debugging.assert_equal(
        batch % b, 0, message=f"the per-replica batch is not a multiple of micro_batch_size={b}"
    )
    num_micro = batch // b
    xs, ys, sws = _split(x, b), _split(y, b), _split(sample_weight, b)

    accumulate = _gradient_sum
    if model.micro_jit_compile:
        accumulate = tf.function(_gradient_sum, jit_compile=True, autograph=False)
    grad_sum, loss_sum, y_pred = accumulate(model, xs, ys, sws, num_micro)

    count = tf.cast(num_micro, tf.float32)
    trainable = model.trainable_weights
    grads = [g / tf.cast(count, g.dtype) for g in grad_sum]
    model.optimizer.apply(grads, trainable)

    loss = loss_sum / count
    model._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss), sample_weight=batch)
    return logs_for_strategy(model.compute_metrics(x, y, y_pred, sample_weight=sample_weight))


def logs_for_strategy(logs):
    """Keras 3 reduces each log across workers with `reduce("MEAN", v, axis=0)`
    under MultiWorkerMirroredStrategy, which fails on scalars: give it [1]."""
    extended = tf.distribute.get_strategy().extended
    if getattr(extended, "_in_multi_worker_mode", lambda: False)():
        return tree.map_structure(lambda v: tf.reshape(v, [1]), logs)
    return logs


def first_local_batch(strategy, epoch_iterator):
    for _, _, iterator in epoch_iterator:
        batch = next(iterator)
        return tree.map_structure(
            lambda v: strategy.experimental_local_results(v)[0]
            if isinstance(v, tf.distribute.DistributedValues)
            else v,
            batch,
        )
