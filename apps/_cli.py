"""What every app shares: user mistakes end in one line and exit code 2,
Ctrl-C in one line and exit code 130 (SIGTERM: 143), and a long data read
shown as it goes.

Importing this module checks KERAS_BACKEND, so import it before anything
that imports Keras."""

import contextlib
import os
import signal
import sys
import time

from absl import app, flags

# Keras' own backends; an unknown name makes `import keras` raise.
KERAS_BACKENDS = ("tensorflow", "jax", "torch", "numpy", "openvino")
INTERRUPTED = 130  # the shell's code for a command ended by SIGINT
TERMINATED = 143  # ... and by SIGTERM


def fail(message, code=2):
    """Ends the program with `error: message` on stderr, no traceback
    (code 2: bad input)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def check_keras_backend():
    backend = os.environ.get("KERAS_BACKEND")
    if backend is not None and backend not in KERAS_BACKENDS:
        fail(f"KERAS_BACKEND={backend}: unknown backend; use one of {', '.join(KERAS_BACKENDS)}")


check_keras_backend()


def parse_flags(argv):
    """absl's flag parsing, its errors as one line. Flags parsed before are
    reset first, so a process may run an app's main more than once."""
    flags.FLAGS.unparse_flags()
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(str(error))


def call_main(main, argv, interrupted="interrupted"):
    """Calls `main()` after refusing positional arguments; Ctrl-C ends it
    with `interrupted` (a string, or a function returning one) and exit 130."""
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        return main()
    except (KeyboardInterrupt, Terminated) as stop:
        message = interrupted() if callable(interrupted) else interrupted
        print(f"stopped: {message}", file=sys.stderr)
        sys.exit(INTERRUPTED if isinstance(stop, KeyboardInterrupt) else TERMINATED)


class Terminated(Exception):
    """SIGTERM where there was no update to finish."""


@contextlib.contextmanager
def stopping_on_signals(request):
    """While inside, SIGTERM and SIGINT (Ctrl-C) ask `request` (a
    `sngm_keras.training.stopping.StopRequest`) to stop the run once the
    update in flight is checkpointed. Before training has started, or at a
    second signal, SIGINT raises KeyboardInterrupt and SIGTERM `Terminated`
    at once. Yields the list of signals received."""
    received = []

    def handler(signum, frame):
        received.append(signum)
        if request.training and not request.is_set():
            request.set(signum)
            return
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run(main, interrupted="interrupted"):
    """`absl.app.run`, with absl's flag errors as one line too, no positional
    arguments accepted, and Ctrl-C as one line (see `call_main`)."""
    app.run(lambda argv: call_main(main, argv, interrupted), flags_parser=parse_flags)


# A read shows a progress bar only once it has taken this long.
PROGRESS_AFTER_SECONDS = 2.0


def show_reading(what, total):
    """The data package's progress reporter (`sngm_keras.data.progress`): a
    line saying what is read, then Keras' progress bar if the read takes
    more than PROGRESS_AFTER_SECONDS (on a terminal a bar, else one line
    when it ends)."""
    print(what, flush=True)
    started = time.monotonic()
    bar, done = None, 0

    def advance(count):
        nonlocal bar, done
        done += count
        if bar is None and total and time.monotonic() - started > PROGRESS_AFTER_SECONDS:
            from keras.utils import Progbar

            bar = Progbar(total, verbose=1 if sys.stdout.isatty() else 2, unit_name="image")
        if bar is not None:
            bar.update(done)

    return advance
