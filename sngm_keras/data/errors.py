"""Errors raised by `sngm_keras.data`."""


class DataError(ValueError):
    """A dataset cannot be found or used as asked.

    The message is a single line naming the problem and how to fix it, so
    apps can print it as is (``sys.exit(str(err))``).
    """
