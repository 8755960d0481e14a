"""Learning-rate grids, as every study runs them: a row's rates are factors
of one base rate; once every run of the grid has finished, the run chosen on
validation decides whether the grid goes on beyond an edge, one rate at a
time, up to a number of extensions. Derived from the finished runs alone, so
a restarted study plans the same runs.

Who chooses is the study's: the table studies rank runs by `validation_score`,
the batch-scaling study ranks the runs that `learned` anything first. Both
break ties by the grid's order (`best`).
"""

import math

from sngm_keras.dataset_names import NUM_CLASSES


def validation_score(summary):
    """The final validation accuracy where the run held a validation split
    out, else (older runs) the test accuracy."""
    return summary.get("validation_accuracy", summary["test_accuracy"])


# A run learned nothing where its final training loss is not below this
# fraction of ln K, the loss of predicting K classes with equal probability.
LEARNED_LOSS_FRACTION = 0.99


def learned(config, summary):
    """Whether the run learned anything: its final training loss finite and
    below 99% of ln K (K classes). A network that diverged ends with no
    finite loss; one whose ReLUs all died predicts the same for every image,
    at best the class shares, whose loss is ln K where the classes are
    balanced (MSGD's stalled runs in the batch-scaling study ended at 2.3026
    to 2.35, ln 10 being 2.3026). A record without a training loss counts
    as learned."""
    loss = summary.get("train_loss")
    if loss is None:
        return True
    if not math.isfinite(loss):
        return False
    classes = summary.get("num_classes") or NUM_CLASSES.get(config.dataset)
    return classes is None or loss < LEARNED_LOSS_FRACTION * math.log(classes)


def best(items, key):
    """The first of `items` with the highest `key`: a tie goes to the one
    the grid lists first."""
    return max(items, key=key)


def beyond_edge(factors, chosen, step=None):
    """The factor one step beyond the edge of the grid `factors` that
    `chosen` lies on; None when `chosen` is inside it.

    `step`: the ratio between an edge and the factor beyond it; None for
    the ratio between the edge and its neighbour, the factor then rounded
    as a user would type it (so a grid widened to it later names the same
    run), and no step for a grid of one factor."""
    distinct = sorted(set(factors))
    if distinct[0] < chosen < distinct[-1]:
        return None
    below = chosen == distinct[0]
    if step is not None:
        return distinct[0] / step if below else distinct[-1] * step
    if len(distinct) < 2:
        return None
    factor = distinct[0] ** 2 / distinct[1] if below else distinct[-1] ** 2 / distinct[-2]
    return float(f"{factor:.6g}")


def extend(factors, summary_at, choose, max_extensions, step=None):
    """The grid `factors` followed by the factors beyond its edges that its
    finished runs call for, in the order they were added, and whether the
    chosen factor still lies on an edge with no extension left.

    `summary_at(factor)`: the summary of the finished run at that factor,
    or None; `choose(factors, summaries)`: the factor whose place in the
    grid decides, once every run has finished; `step`: see `beyond_edge`."""
    factors = list(factors)
    extensions = 0
    while True:
        summaries = [summary_at(f) for f in factors]
        if any(s is None for s in summaries):
            return factors, False
        factor = beyond_edge(factors, choose(factors, summaries), step)
        if factor is None:
            return factors, False
        if extensions == max_extensions:
            return factors, True
        factors.append(factor)
        extensions += 1
