"""What every app shares: user mistakes end in one line and exit code 2."""

import sys

from absl import app, flags


def fail(message, code=2):
    """Ends the program with `error: message` on stderr, no traceback
    (code 2: bad input)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(str(error))


def run(main):
    """`absl.app.run`, with absl's flag errors as one line too, and no
    positional arguments accepted."""

    def checked_main(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}")
        return main()

    app.run(checked_main, flags_parser=_parse_flags)
