"""Checks of hyperparameters and batch splits, the only ones in the project:
the optimizers, the micro-batch model and its train steps, the input
pipelines, the run configuration, the tuner and the studies all call these.

Each check returns the value as the caller should keep it (a Python float or
int), or raises `InvalidValue`, a ValueError naming the value at fault. The
apps' errors are made from it where their checks run (`ConfigError` names a
flag, `DataError` prints the line as is), so the library's rules and wording
live here once. NumPy scalars count as numbers; bools never do.
"""

import math
import numbers


class InvalidValue(ValueError):
    """`name` (the argument or flag at fault) fails `requirement`, the words
    after it: str() is f"{name} {requirement}"."""

    def __init__(self, name, requirement):
        super().__init__(f"{name} {requirement}")
        self.name = name
        self.requirement = requirement

    def __reduce__(self):  # pickles with both parts (a ValueError keeps only its message)
        return type(self), (self.name, self.requirement)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, numbers.Integral) and _is_real(value)


def _show(bound):
    """A bound as a person would write it: 0, not 0.0."""
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def check_number(name, value):
    """Returns `value` as a float, unless it is not a finite number."""
    if not _is_real(value) or not math.isfinite(value):
        raise InvalidValue(name, f"must be a finite number, got {value!r}")
    return float(value)


def check_range(name, value, low, high=None, high_inclusive=False, low_inclusive=True):
    """Returns `value` as a float, unless it is not a finite number in
    [low, high) (the brackets as the arguments say; no `high`: no upper bound)."""
    number = check_number(name, value)
    too_low = not (number >= low if low_inclusive else number > low)
    too_high = high is not None and not (number <= high if high_inclusive else number < high)
    if too_low or too_high:
        if high is None:
            span = f"{'>=' if low_inclusive else '>'} {_show(low)}"
        else:
            span = f"in {'[' if low_inclusive else '('}{_show(low)}, {_show(high)}{']' if high_inclusive else ')'}"
        raise InvalidValue(name, f"must be {span}, got {value!r}")
    return number


def check_positive(name, value):
    """Returns `value` as a float, unless it is not a finite number > 0."""
    return check_range(name, value, 0, low_inclusive=False)


def check_fraction(name, value):
    """Returns `value` as a float, unless it is not in (0, 1)."""
    return check_range(name, value, 0, 1, low_inclusive=False)


def check_int(name, value, low=None, high=None):
    """Returns `value` as an int, unless it is not a whole number (an int
    type, not a float) in [low, high], both bounds optional."""
    if _is_int(value) and (low is None or value >= low) and (high is None or value <= high):
        return int(value)
    if low == 1 and high is None:
        raise InvalidValue(name, f"must be a positive integer, got {value!r}")
    if low == 0 and high is None:
        raise InvalidValue(name, f"must be a non-negative integer, got {value!r}")
    if high is None:
        span = "" if low is None else f" >= {low}"
    else:
        span = f" <= {high}" if low is None else f" in [{low}, {high}]"
    raise InvalidValue(name, f"must be an integer{span}, got {value!r}")


def check_positive_int(name, value):
    """Returns `value` as an int, unless it is not an integer >= 1."""
    return check_int(name, value, 1)


def check_non_negative_int(name, value):
    """Returns `value` as an int, unless it is not an integer >= 0."""
    return check_int(name, value, 0)


def check_choice(name, value, choices):
    """Returns `value`, unless it is not one of `choices`."""
    if isinstance(value, bool) or value not in choices:
        raise InvalidValue(name, f"must be one of {', '.join(str(c) for c in choices)}, got {value!r}")
    return value


def check_values(name, values, check=None, unique=True):
    """Returns `values` as a tuple, each passed through `check(name, value)`
    when given, unless there are none or (`unique`) one repeats."""
    values = () if values is None else tuple(values)
    if not values:
        raise InvalidValue(name, "must hold at least one value, got none")
    if check is not None:
        values = tuple(check(name, value) for value in values)
    if unique and len(set(values)) != len(values):
        repeated = next(v for v in values if values.count(v) > 1)
        raise InvalidValue(name, f"must not repeat a value, got {_show(repeated)} more than once")
    return values


def check_interval(name, bounds, low=None, low_inclusive=True):
    """Returns (min, max) as floats, unless `bounds` are not two finite
    numbers with min <= max; with `low`, min must be >= low (> low unless
    `low_inclusive`)."""
    bounds = () if bounds is None else tuple(bounds)
    if len(bounds) != 2:
        raise InvalidValue(name, f"must be two numbers MIN,MAX, got {len(bounds)}")
    first, last = (check_number(name, b) for b in bounds)
    if first > last:
        raise InvalidValue(name, f"must be MIN,MAX with MIN <= MAX, got {first:g},{last:g}")
    if low is not None:
        check_range(name, first, low, low_inclusive=low_inclusive)
    return first, last


def check_learning_rate(learning_rate, name="learning_rate"):
    """Returns the learning rate as Keras wants it (a float > 0, a schedule or
    a callable)."""
    if _is_real(learning_rate):
        return check_positive(name, learning_rate)
    import keras  # here: the data package's array path calls these checks and never imports Keras

    if callable(learning_rate) or isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return learning_rate
    raise InvalidValue(name, f"must be a positive float or a schedule, got {learning_rate!r}")


def _per_step(micro_batch_size, num_replicas):
    if num_replicas == 1:
        return f"{micro_batch_size}"
    return f"{micro_batch_size} x {num_replicas} replicas = {micro_batch_size * num_replicas}"


def batch_split_message(batch, micro_batch_size, num_replicas=1):
    """Why `batch` does not split; `batch` is a size, or words for one that
    only a running step knows (the traced guard of a tensor's shape)."""
    return f"{batch} is not a multiple of micro_batch_size {_per_step(micro_batch_size, num_replicas)}"


def check_batch_split(batch_size, micro_batch_size, num_replicas=1, name="batch_size"):
    """Returns k, the micro-batches of each replica, when batch_size = k x
    micro_batch_size x num_replicas; raises InvalidValue otherwise.

    The error is named `name`: the batch's name (a caller may call it
    otherwise, e.g. one of "batch_sizes"), or "micro_batch_size" to put the
    fault on the micro-batch when the batch size is the one given first.
    """
    blame_micro = name == "micro_batch_size"
    check_positive_int("batch_size" if blame_micro else name, batch_size)
    check_positive_int("micro_batch_size", micro_batch_size)
    check_positive_int("num_replicas", num_replicas)
    if batch_size % (micro_batch_size * num_replicas):
        if blame_micro:
            raise InvalidValue(
                name, f"{_per_step(micro_batch_size, num_replicas)} does not divide batch_size {batch_size}"
            )
        raise InvalidValue(name, batch_split_message(batch_size, micro_batch_size, num_replicas))
    return batch_size // (micro_batch_size * num_replicas)


def check_replica_split(batch_size, num_replicas, name="batch_size"):
    """Returns each replica's share of the batch, unless the batch does not
    split evenly over `num_replicas`."""
    check_positive_int(name, batch_size)
    check_positive_int("num_replicas", num_replicas)
    if batch_size % num_replicas:
        raise InvalidValue(
            name, f"{batch_size} does not split evenly over {num_replicas} replicas; use a multiple of {num_replicas}"
        )
    return batch_size // num_replicas
