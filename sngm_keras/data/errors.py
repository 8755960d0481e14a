"""Errors raised by `sngm_keras.data`."""

import contextlib

from sngm_keras.checks import InvalidValue


class DataError(ValueError):
    """A dataset cannot be found or used as asked.

    The message is a single line naming the problem and how to fix it, so
    apps can print it as is (``sys.exit(str(err))``).
    """


@contextlib.contextmanager
def as_data_errors():
    """Turns a failed check of `sngm_keras.checks` into a DataError with its
    line; usable as a decorator too."""
    try:
        yield
    except InvalidValue as error:
        raise DataError(str(error)) from None
