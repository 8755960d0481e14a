"""How long the apps take to answer `--help` and a flag mistake: each
command runs --repeats times as a fresh process (as a user types it), with
and without TF_CPP_MIN_LOG_LEVEL=3; prints the median and range of the
wall time and the lines it wrote to stderr.

    python -m benchmarks.bench_flag_errors --repeats=5
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import flags

from apps._cli import run

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Processes timed per command.", lower_bound=1)
flags.DEFINE_string("output", "bench_flag_errors.json", "JSON results.")

COMMANDS = {
    "train --help": ["apps.train", "--help"],
    "train --batch_size=0": ["apps.train", "--batch_size=0"],
    "train --optimiser=sngm": ["apps.train", "--optimiser=sngm"],
    "train --dataset=no/such/folder": ["apps.train", "--dataset=no/such/folder"],
    "tune --help": ["apps.tune", "--help"],
    "tune --max_trials=0": ["apps.tune", "--max_trials=0"],
    "reproduce --help": ["apps.reproduce", "--help"],
    "reproduce --study=table9": ["apps.reproduce", "--study=table9"],
}


def time_command(args, env):
    """Seconds the process took, its exit code and its stderr's lines."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True)
    return time.perf_counter() - started, done.returncode, done.stderr.splitlines()


def main():
    results = {"machine": f"{os.cpu_count()} CPUs", "repeats": FLAGS.repeats, "commands": []}
    for log_level in (None, "3"):
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
        if log_level:
            env["TF_CPP_MIN_LOG_LEVEL"] = log_level
        for name, args in COMMANDS.items():
            runs = [time_command(args, env) for _ in range(FLAGS.repeats)]
            seconds = [s for s, _, _ in runs]
            _, code, stderr = runs[-1]
            row = {
                "command": name,
                "TF_CPP_MIN_LOG_LEVEL": log_level,
                "median_s": round(statistics.median(seconds), 3),
                "min_s": round(min(seconds), 3),
                "max_s": round(max(seconds), 3),
                "exit_code": code,
                "stderr_lines": len(stderr),
                "stderr_first": stderr[0] if stderr else "",
            }
            results["commands"].append(row)
            level = f"TF_CPP_MIN_LOG_LEVEL={log_level}" if log_level else "unset"
            print(
                f"{name:34s} {level:24s} {row['median_s']:6.2f} s ({row['min_s']:.2f}-{row['max_s']:.2f}) "
                f"exit {code}, {len(stderr)} stderr line(s): {row['stderr_first'][:70]}"
            )
    with open(FLAGS.output, "w") as file:
        json.dump(results, file, indent=1)
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    run(main)
