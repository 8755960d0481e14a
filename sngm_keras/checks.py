"""Checks of hyperparameters and batch splits, shared by the optimizers, the
micro-batch model, the input pipelines, the run configuration, the tuner and
the studies. Each raises `ValueError` with a message that names the argument,
so that the apps can show it as one line."""

import keras


def check_learning_rate(learning_rate, name="learning_rate"):
    """Returns the learning rate as Keras wants it (a float > 0, a schedule or
    a callable), or raises ValueError."""
    if isinstance(learning_rate, bool):
        raise ValueError(f"{name} must be a positive float or a schedule, got {learning_rate!r}")
    if isinstance(learning_rate, (int, float)):
        if not learning_rate > 0:
            raise ValueError(f"{name} must be > 0, got {learning_rate!r}")
        return float(learning_rate)
    if callable(learning_rate) or isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return learning_rate
    raise ValueError(f"{name} must be a positive float or a schedule, got {learning_rate!r}")


def check_range(name, value, low, high=None, high_inclusive=False, low_inclusive=True):
    """Returns `value` as a float, or raises ValueError naming `name` unless
    it lies in [low, high) (the brackets as the flags say)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    too_low = not (value >= low if low_inclusive else value > low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        opening = "[" if low_inclusive else "("
        if high is None:
            span = f">= {low}" if low_inclusive else f"> {low}"
        else:
            span = f"{opening}{low}, {high}{']' if high_inclusive else ')'}"
        raise ValueError(f"{name} must be {'in ' if high is not None else ''}{span}, got {value!r}")
    return float(value)


def check_positive(name, value):
    """Returns `value` as a float, or raises ValueError unless it is > 0."""
    return check_range(name, value, 0.0, low_inclusive=False)


def check_positive_int(name, value):
    """Returns `value`, or raises ValueError unless it is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_batch_split(batch_size, micro_batch_size, num_replicas=1):
    """Returns the number of micro-batches per replica, k, or raises
    ValueError unless batch_size = k * micro_batch_size * num_replicas."""
    check_positive_int("batch_size", batch_size)
    check_positive_int("micro_batch_size", micro_batch_size)
    if batch_size % (micro_batch_size * num_replicas):
        raise ValueError(
            f"batch_size {batch_size} is not a multiple of micro_batch_size {micro_batch_size}"
            f" x {num_replicas} replica(s) = {micro_batch_size * num_replicas}"
        )
    return batch_size // (micro_batch_size * num_replicas)
