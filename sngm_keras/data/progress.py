"""Progress of the long reads (an image folder decoded into memory, a TFDS
dataset loaded into it): the data package reports it, whoever runs the
read shows it. Nothing is shown unless a caller installs a reporter:

    def reporter(what, total):      # called once when a read starts
        ...                         # e.g. print `what`, make a progress bar
        return advance              # advance(n): n more of `total` done

    with sngm_keras.data.progress.reported_to(reporter):
        sngm_keras.data.make_datasets("path/to/folder", ...)
"""

import contextlib
import contextvars

_reporter = contextvars.ContextVar("sngm_keras_data_progress", default=None)


@contextlib.contextmanager
def reported_to(reporter):
    """Reads inside the block report to `reporter(what, total) -> advance`."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)


def _ignore(count):
    pass


def start(what, total):
    """A read of `total` items starts; returns `advance(count)`."""
    reporter = _reporter.get()
    return _ignore if reporter is None else reporter(what, total)


def note(text):
    """A remark on a read (files it left out), shown as a read's line is."""
    start(text, 0)
