"""Learning curves like the paper's Figure 2: training loss and test accuracy
against #grad/n (gradient computations divided by the training-set size,
i.e. epochs of data seen)."""

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


def plot_curves(groups, path):
    """Writes `curves_figure(groups)` to `path` (PNG)."""
    fig = curves_figure(groups)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_noise_scale(rows, batch_size, path):
    """The gradient noise scale B_simple at the end of each epoch against
    #grad/n, with the run's batch size for reference; writes nothing when
    the rows hold no measurement."""
    measured = [r for r in rows if r.get("gradient_noise_scale") not in (None, "")]
    finite = [r for r in measured if 0 < float(r["gradient_noise_scale"]) < float("inf")]
    if not finite:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(
        [float(r["grad_per_n"]) for r in finite],
        [float(r["gradient_noise_scale"]) for r in finite],
        marker="o",
        label="B_simple (EMA ratio)",
    )
    ax.axhline(batch_size, color="gray", linestyle="--", label=f"batch size B={batch_size}")
    ax.set(
        xlabel="#grad/n",
        ylabel="gradient noise scale",
        yscale="log",
        title="Gradient noise scale (McCandlish et al. 2018)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
