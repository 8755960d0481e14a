"""SNGM's gap to MSGD at B = 128 against the epoch budget, from run records.

Reads the records (config.json and summary.json) of finished `apps.train`
runs, takes MSGD at B = 128 and SNGM at B = 4096 at every budget found (one
run per method and budget; where a budget holds more than one SNGM run, the
one with the highest validation accuracy), and writes a markdown table of
their test and validation accuracy and the gap (MSGD minus SNGM) at each
budget, and a figure of the same beside the paper's 160-epoch gap.

    python -m tools.gap_by_budget --runs=docs/table2/runs,docs/table2/40_epochs/runs,docs/table2/160_epochs/runs \\
        --output=docs/table2_gap_by_budget.png
"""

import glob
import json
import os

from absl import flags

from apps._cli import fail, run

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", None, "Folders of run records (each run a subfolder with config.json and summary.json).")
flags.DEFINE_string("output", None, "The figure to write (PNG); the table goes to standard output.")

PAPER_GAP = 91.63 - 91.42  # Table 2: MSGD at B = 128 minus SNGM at B = 4096, 160 epochs
METHODS = {("msgd", 128): "MSGD, B = 128", ("sngm", 4096): "SNGM, B = 4096"}


def read_records(folders):
    """[(config, summary)] of the finished runs under `folders`."""
    records = []
    for folder in folders:
        for path in sorted(glob.glob(os.path.join(folder, "*", "summary.json"))):
            with open(path) as f:
                summary = json.load(f)
            with open(os.path.join(os.path.dirname(path), "config.json")) as f:
                config = json.load(f)
            if summary.get("complete"):
                records.append((config, summary))
    return records


def by_budget(records):
    """{epochs: {method key: summary}}, SNGM's best run by validation accuracy."""
    table = {}
    for config, summary in records:
        key = (config["optimizer"], config["batch_size"])
        if key not in METHODS:
            continue
        cell = table.setdefault(config["epochs"], {})
        if key in cell and key[0] == "msgd":
            raise ValueError(f"two MSGD runs at B = 128 and {config['epochs']} epochs")
        if key not in cell or summary["validation_accuracy"] > cell[key]["validation_accuracy"]:
            cell[key] = summary
    return dict(sorted(table.items()))


def gap(cell, field):
    """MSGD minus SNGM in points, or None where either run is missing."""
    msgd, sngm = cell.get(("msgd", 128)), cell.get(("sngm", 4096))
    return None if msgd is None or sngm is None else 100 * (msgd[field] - sngm[field])


def markdown(table):
    def accuracy(summary):
        if summary is None:
            return "no finished run"
        return f"{100 * summary['test_accuracy']:.2f}% ({100 * summary['validation_accuracy']:.2f}%)"

    header = ("epochs", "MSGD, B = 128: test (validation)", "SNGM, B = 4096: test (validation)")
    lines = ["| " + " | ".join(header) + " | gap in points: test (validation) |", "|---|---|---|---|"]
    for epochs, cell in table.items():
        test, validation = gap(cell, "test_accuracy"), gap(cell, "validation_accuracy")
        points = "" if test is None else f"{test:.2f} ({validation:.2f})"
        lines.append(
            f"| {epochs} | {accuracy(cell.get(('msgd', 128)))} | {accuracy(cell.get(('sngm', 4096)))} | {points} |"
        )
    return "\n".join(lines)


def draw(table, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in METHODS.items():
        points = [(epochs, 100 * cell[key]["test_accuracy"]) for epochs, cell in table.items() if key in cell]
        left.plot(*zip(*points), marker="o", label=label)
    left.set(xscale="log", xlabel="epochs", ylabel="test accuracy (%)", title="Test accuracy")
    gaps = [(epochs, gap(cell, "test_accuracy")) for epochs, cell in table.items()]
    gaps = [(epochs, value) for epochs, value in gaps if value is not None]
    right.plot(*zip(*gaps), marker="o", label="ours (JPEG copy of CIFAR-10)")
    right.plot([160], [PAPER_GAP], marker="*", markersize=12, linestyle="none", label="paper, 160 epochs")
    right.axhline(0, color="gray", linewidth=0.5)
    right.set(xscale="log", xlabel="epochs", ylabel="points", title="MSGD at B = 128 minus SNGM at B = 4096")
    for axis in (left, right):
        ticks = sorted(set(table) | {160})
        axis.set_xticks(ticks, [str(t) for t in ticks])
        axis.minorticks_off()
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main():
    if not FLAGS.runs:
        fail("--runs: name at least one folder of run records")
    missing = [folder for folder in FLAGS.runs if not os.path.isdir(folder)]
    if missing:
        fail(f"--runs: no folder {missing[0]}")
    try:
        table = by_budget(read_records(FLAGS.runs))
    except ValueError as error:
        fail(f"--runs: {error}")
    if not any(gap(cell, "test_accuracy") is not None for cell in table.values()):
        fail("--runs: no budget holds both MSGD at B = 128 and SNGM at B = 4096")
    print(markdown(table))
    if FLAGS.output:
        draw(table, FLAGS.output)


if __name__ == "__main__":
    run(main)
