"""Runs one app's main in this process, once per argument list: fast checks
of many command lines without a Python and TensorFlow start each.

    python -m tests.app_driver apps.train RESULTS < cases.jsonl

Each stdin line is a JSON list of arguments; each line of the file RESULTS a
JSON object {"code", "stdout", "stderr"} (code "traceback" when an
exception escaped). Output of processes the app starts is not captured.
The apps' flags are global to a process, so each app needs its own.
"""

import contextlib
import importlib
import io
import json
import sys
import traceback


def run_case(module, args):
    from apps import _cli

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            argv = _cli.parse_flags([module.__name__, *args])
            _cli.call_main(module.main, argv, getattr(module, "_interrupted", "interrupted"))
        except SystemExit as stop:
            code = stop.code
        except BaseException:  # noqa: BLE001 - reported to the test
            traceback.print_exc()
            code = "traceback"
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main():
    module = importlib.import_module(sys.argv[1])
    with open(sys.argv[2], "w") as results:
        for line in sys.stdin:
            if line.strip():
                results.write(json.dumps(run_case(module, json.loads(line))) + "\n")
                results.flush()


if __name__ == "__main__":
    main()
