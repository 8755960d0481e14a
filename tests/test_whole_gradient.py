"""The gradient the optimizers step on: the mean gradient of the whole batch
over its micro-batches, against a NumPy reference on a linear model with
the mean squared error, whose gradient is known in closed form."""

import keras
import numpy as np

import sngm_keras
from sngm_keras.accumulation import MicroBatchModel
from tests import reference
from tests.helpers import max_diff

LR, WD, MOMENTUM = 0.1, 0.1, 0.9


def problem(n, seed=0):
    """Inputs (n, 4), targets (n, 2) and the weights [kernel, bias] of Dense(2)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = rng.normal(size=(n, 2)).astype("float32")
    return x, y, [rng.normal(size=(4, 2)).astype("float32"), rng.normal(size=2).astype("float32")]


def batches_of(x, y, batch):
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]


def mse_gradient(w, x, y):
    """Gradient of Keras' "mse" of x @ kernel + bias: the mean over the rows
    and outputs of the squared error (float64)."""
    kernel, bias = w
    r = np.asarray(x, np.float64) @ kernel + bias - y
    scale = 2.0 / r.size
    return [scale * x.T @ r, scale * r.sum(axis=0)]


def mean_of(parts):
    return [np.mean(np.stack(p), axis=0) for p in zip(*parts)]


def sum_of(parts):
    return [np.sum(np.stack(p), axis=0) for p in zip(*parts)]


def reference_steps(method, w, batches, micro, gradient=mean_of):
    """One step per batch of SNGM or MSGD with coupled L2 (float64), on
    `gradient(parts)`, `parts` being the gradients of the batch's
    micro-batches of `micro` rows."""
    w = [np.asarray(a, np.float64) for a in w]
    u = [np.zeros_like(a) for a in w]
    for x, y in batches:
        parts = [mse_gradient(w, x[i : i + micro], y[i : i + micro]) for i in range(0, len(x), micro)]
        g = [gi + WD * wi for gi, wi in zip(gradient(parts), w)]
        if method == "sngm":
            g = [gi / reference.global_norm(g) for gi in g]
        u = [MOMENTUM * ui + gi for ui, gi in zip(u, g)]
        w = [wi - LR * ui for wi, ui in zip(w, u)]
    return w


def optimizer(method, **kwargs):
    cls = {"sngm": sngm_keras.SNGM, "msgd": sngm_keras.MSGD}[method]
    return cls(LR, momentum=MOMENTUM, weight_decay=WD, **kwargs)


def linear(w0):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.set_weights(w0)
    return model


def fit_micro_batches(method, micro, batch, steps, **kwargs):
    """`steps` updates of MicroBatchModel; its weights, the initial weights and the batches."""
    x, y, w0 = problem(batch * steps)
    model = MicroBatchModel(linear(w0), micro, noise_scale=False)
    model.compile(optimizer=optimizer(method, **kwargs), loss="mse")
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == steps
    return model.get_weights(), w0, batches_of(x, y, batch)


# -- the mean, not the sum -------------------------------------------------


def test_the_step_is_taken_on_the_mean_of_the_micro_batch_gradients():
    """SNGM with L2, batches of 32 as 4 micro-batches of 8: the step is
    Algorithm 1 on the mean gradient of the 32 examples (the paper's
    mini-batch gradient), not on the sum over the micro-batches, which the
    L2 term tells apart (g + wd w is not parallel to 4 g + wd w)."""
    weights, w0, batches = fit_micro_batches("sngm", micro=8, batch=32, steps=2)
    mean = reference_steps("sngm", w0, batches, 8)
    assert max_diff(weights, mean) < 1e-6
    assert max_diff(reference_steps("sngm", w0, batches, 8, gradient=sum_of), mean) > 1e-3
    assert max_diff(mean, w0) > 1e-2
