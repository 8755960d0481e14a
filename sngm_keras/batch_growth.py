"""A batch size that follows the measured gradient noise scale: the rule.

McCandlish et al. (2018) predict that the most efficient batch tracks the
gradient noise scale as it grows during training; Smith et al. ("Don't decay
the learning rate, increase the batch size", 2018) and Pollux (OSDI 2021)
start small and grow the batch. Here, at each epoch's end the next epoch's
batch becomes `factor` x the measured B_simple (`sngm_keras.noise_scale`),

- rounded down to `multiple` x 2^k, `multiple` being the micro-batch times
  the replicas (so every batch is made of whole micro-batches of the same
  size, and BatchNorm statistics and memory do not change as it grows);
- clamped to [start, maximum], `start` the run's first batch;
- never below the current batch (the batch only grows).

A noise scale that is absent, not finite or not positive (not measured yet,
or a |G|^2 average that is not positive) leaves the batch as it is.

When the batch grows, the learning rate is multiplied by (B / B0)^k,
`LR_SCALINGS` naming k: none (0), sqrt (1/2), linear (1). The schedule
itself keeps counting in examples, so a run's length and its decay are the
same whatever the batch does (`sngm_keras.batch_growth_fit`).

Pure Python: the apps check their flags with it before Keras loads.
"""

import math

from sngm_keras import checks

GROWTH_MODES = ("none", "noise_scale")
LR_SCALINGS = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}


def grown_batch_size(current, noise_scale, *, multiple, start, maximum, factor=1.0):
    """The next epoch's batch: `factor` x `noise_scale` rounded down to
    `multiple` x 2^k, clamped to [`start`, `maximum`], at least `current`."""
    if noise_scale is None or not math.isfinite(noise_scale) or noise_scale <= 0:
        return current
    target = factor * noise_scale
    rounded = multiple
    while rounded * 2 <= target:  # whole numbers: no rounding error at a power of two
        rounded *= 2
    return max(current, start, min(maximum, rounded))


def largest_batch_size(limit, multiple):
    """The largest `multiple` x 2^k that is at most `limit` (`multiple` when none is)."""
    size = multiple
    while size * 2 <= limit:
        size *= 2
    return size


def lr_factor(batch_size, start, scaling):
    """The learning rate's factor at `batch_size` for a run that started at
    `start`: (batch_size / start)^k, k from `LR_SCALINGS[scaling]`."""
    k = LR_SCALINGS[scaling]
    return 1.0 if k == 0 else (batch_size / start) ** k


def batches(examples, batch_size):
    """Batches of `batch_size` that hold `examples`, the last one possibly smaller."""
    return -(-examples // batch_size)


def examples_after(updates, epoch_batch_sizes, examples_per_epoch):
    """Training examples used by the first `updates` updates of a run whose
    epoch e trained at `epoch_batch_sizes[e]` (the last one for the epochs
    after the list), every epoch on `examples_per_epoch` examples, its last
    batch holding the rest."""
    total = 0
    for epoch in range(len(epoch_batch_sizes) if epoch_batch_sizes else 0):
        size = epoch_batch_sizes[epoch]
        steps = batches(examples_per_epoch, size)
        if updates < steps or epoch == len(epoch_batch_sizes) - 1:
            return total + updates // steps * examples_per_epoch + updates % steps * size
        total += examples_per_epoch
        updates -= steps
    return total


def segments(epoch_batch_sizes):
    """[(first epoch, batch size)] of each run of epochs at one batch size."""
    found = []
    for epoch, size in enumerate(epoch_batch_sizes):
        if not found or found[-1][1] != size:
            found.append((epoch, size))
    return found


def describe_batch_sizes(epoch_batch_sizes, epochs_done=None):
    """`128 (epochs 1-3), 256 (epochs 4-10)`: the batches of the first
    `epochs_done` epochs (all of the list by default), epochs counted from 1."""
    sizes = list(epoch_batch_sizes[:epochs_done] if epochs_done is not None else epoch_batch_sizes)
    parts = []
    runs = segments(sizes)
    for i, (first, size) in enumerate(runs):
        last = (runs[i + 1][0] if i + 1 < len(runs) else len(sizes)) - 1
        span = f"epoch {first + 1}" if first == last else f"epochs {first + 1}-{last + 1}"
        parts.append(f"{size} ({span})")
    return ", ".join(parts)


def check_growth_settings(mode, batch_size, micro_batch_size, max_batch_size, factor, lr_scaling, noise_scale=True):
    """Raises `checks.InvalidValue`, named after the flag at fault, unless
    these settings can grow a batch: the noise scale measured, two or more
    micro-batches of a given size an update, a maximum not below the start."""
    checks.check_choice("batch_growth", mode, GROWTH_MODES)
    checks.check_choice("lr_batch_scaling", lr_scaling, tuple(LR_SCALINGS))
    checks.check_positive("batch_growth_factor", factor)
    if max_batch_size is not None:
        checks.check_positive_int("max_batch_size", max_batch_size)
    if mode == "none":
        return
    if not noise_scale:
        raise checks.InvalidValue(
            "noise_scale", "off, but --batch_growth=noise_scale grows the batch by it; drop --nonoise_scale"
        )
    if micro_batch_size is None or batch_size < 2 * micro_batch_size:
        raise checks.InvalidValue(
            "micro_batch_size",
            "must be given, at most --batch_size / 2: --batch_growth=noise_scale needs two or more micro-batches "
            f"an update (the noise scale compares them), of a fixed size (here at most {batch_size // 2})",
        )
    if max_batch_size is not None and max_batch_size < batch_size:
        raise checks.InvalidValue(
            "max_batch_size", f"{max_batch_size} is below --batch_size={batch_size}, the first batch"
        )
    if max_batch_size is not None and max_batch_size % micro_batch_size:
        raise checks.InvalidValue(
            "max_batch_size", f"{max_batch_size} is not a multiple of --micro_batch_size={micro_batch_size}"
        )
