"""TensorFlow train step of `MicroBatchModel`: a while loop over micro-batches."""

import keras
import tensorflow as tf
from keras import tree
from keras.src.losses import loss as loss_module

from sngm_keras.checks import batch_split_message
from sngm_keras.noise_scale import sum_of_squares
from sngm_keras.optimizers.base import ReducedGradientOptimizer


def _split(structure, micro_batch_size):
    def split(t):
        if t is None:
            return None
        return tf.reshape(t, tf.concat([[-1, micro_batch_size], tf.shape(t)[1:]], 0))

    return tree.map_structure(split, structure)


def _take(structure, i):
    return tree.map_structure(lambda t: None if t is None else t[i], structure)


def _gradient_sum(model, xs, ys, sws, num_micro, measure_noise=False):
    """Forward and backward over every micro-batch; returns the summed
    gradients, the summed loss, the stacked predictions and the sum over the
    micro-batches of each one's gradient's sum of squares (0 unless
    `measure_noise`)."""
    trainable = model.trainable_weights

    def body(i, grad_sum, loss_sum, preds, sq_sum):
        x, y, sw = _take(xs, i), _take(ys, i), _take(sws, i)
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sw, training=True)
            scaled = model.optimizer.scale_loss(loss) if model.optimizer is not None else loss
        grads = tape.gradient(scaled, trainable)
        grad_sum = [s + tf.cast(g, s.dtype) for s, g in zip(grad_sum, grads)]
        if measure_noise:
            sq_sum = sq_sum + sum_of_squares(grads)
        preds = tree.map_structure(lambda ta, p: ta.write(i, tf.cast(p, tf.float32)), preds, y_pred)
        return i + 1, grad_sum, loss_sum + tf.cast(loss, tf.float32), preds, sq_sum

    # Predictions are kept (B x classes floats) so metrics see the whole batch.
    output_spec = model.compute_output_spec(tree.map_structure(lambda t: keras.KerasTensor(t.shape[1:], t.dtype), xs))
    pred_arrays = tree.map_structure(lambda s: tf.TensorArray(tf.float32, size=num_micro), output_spec)
    zeros = [tf.zeros(v.shape, dtype=v.dtype) for v in trainable]
    _, grad_sum, loss_sum, preds, sq_sum = tf.while_loop(
        lambda i, *_: i < num_micro,
        body,
        (tf.constant(0), zeros, tf.constant(0.0), pred_arrays, tf.constant(0.0)),
        parallel_iterations=1,
    )
    preds = tree.map_structure(lambda ta: _merge_micro(ta.stack()), preds)
    return grad_sum, loss_sum, preds, sq_sum


def _merge_micro(t):
    shape = tf.shape(t)
    return tf.reshape(t, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))


def train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    b = model.micro_batch_size
    first = next(t for t in tree.flatten(x) if t is not None)
    batch = tf.shape(first)[0]
    # The batch's size may be known only when the step runs: a guard in the graph.
    guards = [tf.debugging.assert_equal(batch % b, 0, message=batch_split_message("the batch of each replica", b))]
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1 and first.shape[0] is None:
        # tf.distribute cuts a batch that does not split evenly into unequal
        # (even empty) parts, which the check above alone can pass.
        total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, batch)
        message = batch_split_message("a batch", b, replicas) + " (its parts on the replicas differ)"
        guards.append(tf.debugging.assert_equal(total, batch * replicas, message=message))
    with tf.control_dependencies(guards):  # before the split's reshape can fail less clearly
        num_micro = batch // b
        xs, ys, sws = _split(x, b), _split(y, b), _split(sample_weight, b)

    noise = _noise_scale_sizes(model, x)

    accumulate = _gradient_sum
    if model.micro_jit_compile:
        accumulate = tf.function(_gradient_sum, jit_compile=True, autograph=False)
    grad_sum, loss_sum, y_pred, sq_sum = accumulate(model, xs, ys, sws, num_micro, noise is not None)

    count = tf.cast(num_micro, tf.float32)
    trainable = model.trainable_weights
    grads = [g / tf.cast(count, g.dtype) for g in grad_sum]
    if noise is None:
        model.optimizer.apply(grads, trainable)
    else:
        _apply_measuring_noise(model, grads, trainable, sq_sum, count, *noise)

    loss = loss_sum / count
    # Private Keras API (pinned by tests/test_private_api_pins.py): Keras
    # divides each replica's loss by the replicas (`scale_loss_for_distribution`)
    # and only its private `unscale_loss_for_distribution` undoes exactly
    # that; the loss tracker that fit reports as "loss" is private too
    # (Keras' own TensorFlow train step updates it the same way).
    model._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss), sample_weight=batch)
    return logs_for_strategy(model.compute_metrics(x, y, y_pred, sample_weight=sample_weight))


def _noise_scale_sizes(model, x):
    """(b, B) for the noise scale, or None (not measured)."""
    if model.noise_scale_tracker is None:
        return None
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    per_replica = next(t for t in tree.flatten(x) if t is not None).shape[0]
    reason = None
    if replicas > 1 and not isinstance(inner_optimizer(model.optimizer), ReducedGradientOptimizer):
        reason = (
            f"under {replicas} replicas the step's gradient is whole only inside the optimizer, "
            "and only sngm_keras optimizers (SNGM, MSGD, LARS) report it"
        )
    if per_replica is not None:
        return model.noise_scale_batches(model.micro_batch_size, per_replica * replicas, reason)
    # The batch's size is known only when the step runs (an epoch's last,
    # smaller batch; MultiWorkerMirroredStrategy's shards): B is read then. A
    # step of a single micro-batch on a single replica gives non-finite
    # estimates, which the tracker leaves out.
    sizes = model.noise_scale_batches(model.micro_batch_size, 2 * model.micro_batch_size, reason)
    if sizes is None:
        return None
    batch = tf.shape(next(t for t in tree.flatten(x) if t is not None))[0]
    return model.micro_batch_size, tf.cast(batch * replicas, tf.float32)


def _apply_measuring_noise(model, grads, trainable, sq_sum, count, small, big):
    """`optimizer.apply(grads)`, updating the noise-scale tracker with the mean
    |g_b|^2 over all micro-batches of all replicas (one scalar all-reduce) and
    the step's |G_B|^2 after the optimizer's all-reduce."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    # The loop's gradients are of optimizer.scale_loss(loss / replicas).
    unit = float(replicas) / tf.cast(model.optimizer.scale_loss(tf.constant(1.0)), tf.float32)
    micro_sq = sq_sum * tf.square(unit)
    if replicas > 1:
        micro_sq = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, micro_sq)
    micro_sq = micro_sq / (count * replicas)

    tracker = model.noise_scale_tracker
    optimizer = inner_optimizer(model.optimizer)
    if isinstance(optimizer, ReducedGradientOptimizer):
        # It sees the all-reduced, unscaled gradient (even as the inner
        # optimizer of a LossScaleOptimizer, which skips it on overflow).
        observe = lambda whole: tracker.update_state(micro_sq, sum_of_squares(whole), small, big)
        with optimizer.observing_gradient(observe):
            model.optimizer.apply(grads, trainable)
    else:  # one replica: the gradient here is the step's
        tracker.update_state(micro_sq, sum_of_squares(grads) * tf.square(unit), small, big)
        model.optimizer.apply(grads, trainable)


def inner_optimizer(optimizer):
    """The optimizer under a LossScaleOptimizer, or the optimizer itself."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def logs_for_strategy(logs):
    """Keras 3 reduces each log across workers with `reduce("MEAN", v, axis=0)`
    under a MultiWorkerMirroredStrategy of several workers, which fails on
    scalars: give it [1]."""
    if _across_workers(tf.distribute.get_strategy()):
        return tree.map_structure(lambda v: tf.reshape(v, [1]), logs)
    return logs


def _across_workers(strategy):
    """Keras' test for that reduction: a MultiWorkerMirroredStrategy with
    more than one worker, whose replicas then outnumber this worker's devices."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.num_replicas_in_sync > len(
        strategy.extended.worker_devices
    )


def first_local_batch(strategy, epoch_iterator):
    for _, _, iterator in epoch_iterator:
        batch = next(iterator)
        return tree.map_structure(
            lambda v: (
                strategy.experimental_local_results(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v
            ),
            batch,
        )
