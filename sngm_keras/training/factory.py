"""From a `TrainConfig` to the compiled training model: the network in its
micro-batch wrapper, the optimizer and its learning-rate schedule."""

import keras

from sngm_keras.optimizers import LARS, MSGD, SNGM
from sngm_keras.schedules import PolynomialWarmup, step_decay


def make_schedule(config, steps_per_epoch):
    """The learning rate as a function of the update count."""
    if config.lr_schedule == "constant":
        return float(config.learning_rate)
    if config.lr_schedule == "step":
        return step_decay(config.learning_rate, steps_per_epoch, config.decay_epochs, config.decay_factor)
    return PolynomialWarmup(
        config.learning_rate,
        total_steps=config.epochs * steps_per_epoch,
        power=config.power,
        warmup_steps=config.warmup_epochs * steps_per_epoch,
        warmup_learning_rate=config.warmup_learning_rate,
    )


def make_optimizer(config, steps_per_epoch, growth=None):
    """The optimizer of `config`; with a `BatchGrowth`, its schedule counted
    in examples (`steps_per_epoch` at the first batch)."""
    schedule = make_schedule(config, steps_per_epoch)
    if growth is not None:
        schedule = growth.schedule(schedule)
    common = dict(learning_rate=schedule, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "sngm":
        return SNGM(**common)
    if config.optimizer == "lars":
        return LARS(trust_coefficient=config.trust_coefficient, pytorch_lars=config.pytorch_lars, **common)
    return MSGD(**common)


def compile_for_training(model, config, steps_per_epoch, jit_compile=False, growth=None):
    """Compiles `model` with the configured optimizer, sparse cross-entropy on
    logits and accuracy, and builds the optimizer so a checkpoint can be
    loaded into it before the first step."""
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch, growth),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    model.optimizer.build(model.trainable_variables)
    return model


def build_training_model(config, info, steps_per_epoch, micro_batch_size, placement, preprocessing=None, growth=None):
    """The network of `config` in a `MicroBatchModel`, compiled, on `placement`.

    With `preprocessing` (the PyDataset feed) it is a
    `PreprocessedMicroBatchModel` and the whole step is always jitted, JAX's
    way (--jit_compile is TensorFlow's choice). On TensorFlow XLA cannot
    compile the all-reduce under a strategy: there the micro-batch loop is
    compiled alone, on one device the whole step. `growth`: a
    `sngm_keras.batch_growth_fit.BatchGrowth`, whose schedule it compiles."""
    from sngm_keras.accumulation import MicroBatchModel, PreprocessedMicroBatchModel
    from sngm_keras.models import build_model

    if preprocessing is not None:
        net = build_model(config.model, info.num_classes, info.image_shape, seed=config.seed)
        model = PreprocessedMicroBatchModel(net, micro_batch_size, preprocessing, noise_scale=config.noise_scale)
        return compile_for_training(model, config, steps_per_epoch, True, growth)
    # JAX always jits the whole step (a streamed folder's input comes here on JAX too).
    jit_whole_step = (config.jit_compile and placement.replicas == 1) or placement.backend == "jax"
    with placement.scope():
        net = build_model(config.model, info.num_classes, info.image_shape, seed=config.seed)
        model = MicroBatchModel(
            net, micro_batch_size, jit_compile=config.jit_compile and not jit_whole_step, noise_scale=config.noise_scale
        )
        return compile_for_training(model, config, steps_per_epoch, jit_whole_step, growth)


def inner_optimizer(optimizer):
    """The optimizer under a LossScaleOptimizer, or the optimizer itself."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer
