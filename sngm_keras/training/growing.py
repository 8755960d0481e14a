"""A run's batch growth (--batch_growth=noise_scale): its
`sngm_keras.batch_growth_fit.BatchGrowth`, from the configuration, the
devices and the checkpoint it resumes from."""

from sngm_keras.batch_growth import largest_batch_size
from sngm_keras.training.config import ConfigError


def batch_size_at(config, state, epoch):
    """The batch of `epoch`: --batch_size, or where a growing run's checkpoint says it was."""
    sizes = (state or {}).get("epoch_batch_sizes") if config.batch_growth != "none" else None
    return int(sizes[min(epoch, len(sizes) - 1)]) if sizes else config.batch_size


def make_growth(config, state, start_epoch, micro, replicas, backend, examples_per_epoch, agree_over=None):
    """The run's `BatchGrowth` (None without --batch_growth), its batches
    those of `state` up to `start_epoch`. Every batch is micro x replicas x
    2^k (or the first, or the largest). `agree_over`: (the membership's
    `sum_over_workers`, whether this worker is the chief) in a cluster,
    whose workers then all take the chief's batch."""
    if config.batch_growth == "none":
        return None
    from sngm_keras.batch_growth_fit import BatchGrowth

    multiple = micro * replicas
    # The noise scale's small batch: a micro-batch of one replica on TensorFlow, of all devices on JAX.
    small = micro * (replicas if backend == "jax" else 1)
    if config.batch_size < 2 * small:
        raise ConfigError(
            "micro_batch_size",
            f"{micro} on {replicas} devices makes B = {config.batch_size} a single small batch ({small} examples) "
            "an update: no noise scale to grow by; use a smaller --micro_batch_size",
        )
    maximum = config.max_batch_size or max(config.batch_size, largest_batch_size(examples_per_epoch, multiple))
    if maximum % multiple:
        raise ConfigError(
            "max_batch_size", f"{maximum} does not split into micro-batches x replicas ({micro} x {replicas})"
        )
    if maximum > examples_per_epoch:
        raise ConfigError("max_batch_size", f"{maximum} is more than an epoch's {examples_per_epoch} examples")
    agree = None
    if agree_over is not None:
        total, is_chief = agree_over
        agree = lambda size: int(total([size if is_chief else 0])[0])
    growth = BatchGrowth(
        config.batch_size,
        maximum,
        multiple,
        examples_per_epoch,
        factor=config.batch_growth_factor,
        lr_scaling=config.lr_batch_scaling,
        agree=agree,
    )
    if state and state.get("epoch_batch_sizes"):
        growth.restore(state, start_epoch)
    return growth
