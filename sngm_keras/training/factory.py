"""From a `TrainConfig` to the optimizer and its learning-rate schedule."""

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


def make_optimizer(config, steps_per_epoch):
    schedule = make_schedule(config, steps_per_epoch)
    common = dict(learning_rate=schedule, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "sngm":
        return SNGM(**common)
    if config.optimizer == "lars":
        return LARS(trust_coefficient=config.trust_coefficient, pytorch_lars=config.pytorch_lars, **common)
    return MSGD(**common)


def compile_for_training(model, config, steps_per_epoch, jit_compile=False):
    """Compiles `model` with the configured optimizer, sparse cross-entropy on
    logits and accuracy, and builds the optimizer so a checkpoint can be
    loaded into it before the first step."""
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    model.optimizer.build(model.trainable_variables)
    return model


def inner_optimizer(optimizer):
    """The optimizer under a LossScaleOptimizer, or the optimizer itself."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer
