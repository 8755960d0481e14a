"""Learning curves like the paper's Figure 2: training loss and test accuracy
against #grad/n (gradient computations divided by the training-set size,
i.e. epochs of data seen). Each figure is written as PNG and, beside it under
the same name, as PDF for a paper."""

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

X_LABEL = "epochs (#grad/n)"


class PlainLogFormatter(ticker.LogFormatter):
    """Log-axis tick labels as plain numbers (0.5, 2, 0.01), where
    matplotlib's default writes 2×10⁰; it labels the same ticks."""

    def __init__(self):
        super().__init__(labelOnlyBase=False)

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def curves_figure(groups):
    """`groups`: {panel title: {run label: history rows}}, rows being dicts
    with `grad_per_n`, `train_loss` and, where evaluated, `test_accuracy`.
    One column per group: training loss on top, test accuracy below."""
    columns = len(groups)
    fig, axes = plt.subplots(2, columns, figsize=(5.5 * columns, 7.5), squeeze=False)
    for column, (title, runs) in enumerate(groups.items()):
        loss_ax, acc_ax = axes[0][column], axes[1][column]
        for label, rows in runs.items():
            loss_ax.plot([float(r["grad_per_n"]) for r in rows], [float(r["train_loss"]) for r in rows], label=label)
            evaluated = [r for r in rows if r.get("test_accuracy") not in (None, "")]
            acc_ax.plot(
                [float(r["grad_per_n"]) for r in evaluated],
                [100 * float(r["test_accuracy"]) for r in evaluated],
                label=label,
            )
        loss_ax.set(title=title, xlabel=X_LABEL, ylabel="training loss", yscale="log")
        loss_ax.yaxis.set_major_formatter(PlainLogFormatter())
        loss_ax.yaxis.set_minor_formatter(PlainLogFormatter())
        acc_ax.set(xlabel=X_LABEL, ylabel="test accuracy (%)")
        for ax in (loss_ax, acc_ax):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, path):
    """Writes `fig` to `path` (PNG) and to the same name with .pdf, and closes it."""
    fig.savefig(path, dpi=110)
    fig.savefig(vector_path(path))
    plt.close(fig)


def vector_path(path):
    """The PDF beside the PNG `path`."""
    return os.path.splitext(path)[0] + ".pdf"


def plot_curves(groups, path):
    """Writes `curves_figure(groups)` to `path` (PNG) and its PDF."""
    save_figure(curves_figure(groups), path)


def plot_noise_scale(rows, batch_size, path, title="Gradient noise scale"):
    """Writes `noise_scale_figure` to `path` (PNG) and its PDF; nothing when
    the rows hold no measurement."""
    fig = noise_scale_figure(rows, batch_size, title)
    if fig is not None:
        save_figure(fig, path)


def noise_scale_figure(rows, batch_size, title="Gradient noise scale"):
    """The gradient noise scale B_simple at the end of each epoch against
    #grad/n, with the run's batch size for reference (a list: the batch of
    each epoch, of a batch grown during the run); None when the rows hold
    no finite measurement."""
    measured = [r for r in rows if r.get("gradient_noise_scale") not in (None, "")]
    finite = [r for r in measured if 0 < float(r["gradient_noise_scale"]) < float("inf")]
    if not finite:
        return None
    scales = [float(r["gradient_noise_scale"]) for r in finite]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(
        [float(r["grad_per_n"]) for r in finite],
        scales,
        marker="o",
        markersize=3,
        label="B_simple (McCandlish et al. 2018)",
    )
    if isinstance(batch_size, list):  # epoch e trained at batch_size[e], from the end of epoch e - 1
        ends = [float(r["grad_per_n"]) for r in rows[: len(batch_size)]]
        label = f"batch size B, {batch_size[0]} to {batch_size[-1]}"
        ax.step([0.0, *ends], [*batch_size, batch_size[-1]], where="post", color="gray", linestyle="--", label=label)
        sizes = list(batch_size)
    else:
        ax.axhline(batch_size, color="gray", linestyle="--", label=f"batch size B = {batch_size}")
        sizes = [batch_size]
    ax.set(xlabel=X_LABEL, ylabel="gradient noise scale", yscale="log", title=title)
    ax.set_ylim(*log_limits(scales + sizes))
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=log_tick_multiples(*ax.get_ylim())))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def log_limits(values, margin=0.08, least_margin=0.1):
    """Limits of a log axis holding `values` inside: a `margin` fraction of
    their span in decades beyond each end, at least `least_margin` decades."""
    low, high = math.log10(min(values)), math.log10(max(values))
    pad = max(margin * (high - low), least_margin)
    return 10 ** (low - pad), 10 ** (high + pad)


def log_tick_multiples(low, high):
    """The multiples of each power of ten that a log axis from `low` to
    `high` labels, fewer the more decades it spans, so that there are a few
    labels and they never crowd."""
    decades = math.log10(high / low)
    if decades < 0.5:
        return tuple(float(m) for m in range(1, 10))
    if decades < 1.5:
        return (1.0, 2.0, 3.0, 5.0)
    return (1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)
