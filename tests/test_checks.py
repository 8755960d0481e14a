"""sngm_keras.checks: the values each check returns, and the one-line error
(its name, its requirement) of each refusal; how the apps' errors are made
from it."""

import pickle

import keras
import numpy as np
import pytest

from sngm_keras import checks
from sngm_keras.checks import InvalidValue
from sngm_keras.data.errors import DataError, as_data_errors
from sngm_keras.training.errors import ConfigError, as_config_errors


def refusal(check, *args, **kwargs):
    with pytest.raises(InvalidValue) as raised:
        check(*args, **kwargs)
    return raised.value


def test_an_invalid_value_is_a_value_error_with_its_name_and_requirement():
    error = refusal(checks.check_range, "momentum", 1.0, 0, 1)
    assert isinstance(error, ValueError)
    assert (error.name, error.requirement) == ("momentum", "must be in [0, 1), got 1.0")
    assert str(error) == "momentum must be in [0, 1), got 1.0"
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.name, copy.requirement, str(copy)) == (
        InvalidValue,
        error.name,
        error.requirement,
        str(error),
    )


def test_check_number_returns_a_float_and_refuses_bools_nan_and_inf():
    assert checks.check_number("x", 3) == 3.0 and isinstance(checks.check_number("x", 3), float)
    assert checks.check_number("x", np.float32(0.5)) == 0.5
    for bad in (True, np.bool_(True), float("nan"), float("inf"), -float("inf"), "1", None):
        assert str(refusal(checks.check_number, "x", bad)) == f"x must be a finite number, got {bad!r}"


def test_check_range_bounds_inclusive_and_exclusive():
    assert checks.check_range("m", 0, 0, 1) == 0.0  # low inclusive by default
    assert str(refusal(checks.check_range, "m", 1, 0, 1)) == "m must be in [0, 1), got 1"
    assert checks.check_range("m", 1, 0, 1, high_inclusive=True) == 1.0
    assert str(refusal(checks.check_range, "m", 0, 0, 1, low_inclusive=False)) == "m must be in (0, 1), got 0"
    assert str(refusal(checks.check_range, "wd", -0.1, 0.0)) == "wd must be >= 0, got -0.1"
    assert checks.check_range("wd", 1e9, 0) == 1e9  # no upper bound
    assert str(refusal(checks.check_range, "m", float("nan"), 0, 1)) == "m must be a finite number, got nan"
    assert str(refusal(checks.check_range, "wd", float("inf"), 0)) == "wd must be a finite number, got inf"


def test_positive_and_fraction():
    assert checks.check_positive("lr", 2) == 2.0
    assert str(refusal(checks.check_positive, "lr", 0.0)) == "lr must be > 0, got 0.0"
    assert checks.check_fraction("f", 0.25) == 0.25
    for bad in (0, 1, 1.5):
        assert str(refusal(checks.check_fraction, "f", bad)) == f"f must be in (0, 1), got {bad!r}"


def test_integers_refuse_bools_floats_and_out_of_bounds():
    assert checks.check_positive_int("b", 4) == 4
    value = checks.check_positive_int("b", np.int64(4))
    assert value == 4 and type(value) is int
    for bad in (0, -1, True, 4.0, "4", None):
        assert str(refusal(checks.check_positive_int, "b", bad)) == f"b must be a positive integer, got {bad!r}"
    assert checks.check_non_negative_int("n", 0) == 0
    assert str(refusal(checks.check_non_negative_int, "n", -1)) == "n must be a non-negative integer, got -1"
    assert checks.check_int("s", 0, 0, 9) == 0 and checks.check_int("s", 9, 0, 9) == 9  # both bounds inclusive
    assert str(refusal(checks.check_int, "s", 10, 0, 9)) == "s must be an integer in [0, 9], got 10"
    assert str(refusal(checks.check_int, "s", 7, 8)) == "s must be an integer >= 8, got 7"
    assert str(refusal(checks.check_int, "s", False)) == "s must be an integer, got False"


def test_choice():
    assert checks.check_choice("opt", "sngm", ("sngm", "lars")) == "sngm"
    assert str(refusal(checks.check_choice, "opt", "adam", ("sngm", "lars"))) == (
        "opt must be one of sngm, lars, got 'adam'"
    )
    assert str(refusal(checks.check_choice, "verbose", True, (0, 1, 2))) == "verbose must be one of 0, 1, 2, got True"


def test_values_each_checked_none_empty_and_repeats_refused():
    assert checks.check_values("b", [2, np.int64(4)], checks.check_positive_int) == (2, 4)
    assert str(refusal(checks.check_values, "b", [])) == "b must hold at least one value, got none"
    assert str(refusal(checks.check_values, "b", None)) == "b must hold at least one value, got none"
    assert str(refusal(checks.check_values, "b", [2, 0], checks.check_positive_int)) == (
        "b must be a positive integer, got 0"
    )
    assert str(refusal(checks.check_values, "m", [0.9, 0.9])) == "m must not repeat a value, got 0.9 more than once"
    assert checks.check_values("g", [1, 1], checks.check_positive, unique=False) == (1.0, 1.0)


def test_interval():
    assert checks.check_interval("r", (0.1, 4)) == (0.1, 4.0)
    assert checks.check_interval("r", (0, 0), low=0) == (0.0, 0.0)
    assert str(refusal(checks.check_interval, "r", ())) == "r must be two numbers MIN,MAX, got 0"
    assert str(refusal(checks.check_interval, "r", (4, 0.1))) == "r must be MIN,MAX with MIN <= MAX, got 4,0.1"
    assert str(refusal(checks.check_interval, "r", (0.1, float("inf")))) == "r must be a finite number, got inf"
    assert str(refusal(checks.check_interval, "r", (0, 1), low=0, low_inclusive=False)) == "r must be > 0, got 0.0"


def test_learning_rate():
    assert checks.check_learning_rate(1) == 1.0
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    assert checks.check_learning_rate(schedule) is schedule
    assert str(refusal(checks.check_learning_rate, -0.1)) == "learning_rate must be > 0, got -0.1"
    assert str(refusal(checks.check_learning_rate, float("inf"))) == "learning_rate must be a finite number, got inf"
    assert str(refusal(checks.check_learning_rate, True)) == (
        "learning_rate must be a positive float or a schedule, got True"
    )


def test_batch_split_returns_micro_batches_per_replica_and_names_the_fault():
    assert checks.check_batch_split(4096, 128) == 32
    assert checks.check_batch_split(4096, 128, 2) == 16
    assert str(refusal(checks.check_batch_split, 64, 24)) == ("batch_size 64 is not a multiple of micro_batch_size 24")
    assert str(refusal(checks.check_batch_split, 4096, 3000, 2)) == (
        "batch_size 4096 is not a multiple of micro_batch_size 3000 x 2 replicas = 6000"
    )
    assert str(refusal(checks.check_batch_split, 500, 300, name="batch_sizes")) == (
        "batch_sizes 500 is not a multiple of micro_batch_size 300"
    )
    assert str(refusal(checks.check_batch_split, 500, 100, 3, name="micro_batch_size")) == (
        "micro_batch_size 100 x 3 replicas = 300 does not divide batch_size 500"
    )
    assert str(refusal(checks.check_batch_split, 500, 300, name="micro_batch_size")) == (
        "micro_batch_size 300 does not divide batch_size 500"
    )
    assert str(refusal(checks.check_batch_split, 64, 0)) == "micro_batch_size must be a positive integer, got 0"
    assert str(refusal(checks.check_batch_split, True, 1)) == "batch_size must be a positive integer, got True"
    assert checks.batch_split_message("the batch of each replica", 8) == (
        "the batch of each replica is not a multiple of micro_batch_size 8"
    )


def test_replica_split():
    assert checks.check_replica_split(500, 4) == 125
    assert str(refusal(checks.check_replica_split, 500, 3)) == (
        "batch_size 500 does not split evenly over 3 replicas; use a multiple of 3"
    )


def test_the_apps_errors_are_made_from_a_refusal():
    with pytest.raises(ConfigError) as raised, as_config_errors():
        checks.check_range("momentum", 1.0, 0, 1)
    assert raised.value.field == "momentum"
    assert str(raised.value) == "--momentum: must be in [0, 1), got 1.0"
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    with pytest.raises(DataError) as raised, as_data_errors():
        checks.check_positive_int("batch_size", 0)
    assert str(raised.value) == "batch_size must be a positive integer, got 0"

    @as_config_errors()
    def validate(value):
        return checks.check_positive_int("epochs", value)

    assert validate(3) == 3
    with pytest.raises(ConfigError, match="^--epochs: must be a positive integer, got 0$"):
        validate(0)
