"""NumPy references of the optimizers, written from the paper's equations."""

import numpy as np


def global_norm(arrays):
    return np.sqrt(sum(np.sum(np.square(a.astype(np.float64))) for a in arrays))


def sngm(weights, grad_fn, lr_fn, steps, momentum=0.9, weight_decay=0.0, layerwise=False, epsilon=1e-30):
    """Algorithm 1: u <- beta u + g/max(||g||, epsilon), w <- w - lr u (float64)."""
    w = [np.array(a, np.float64) for a in weights]
    u = [np.zeros_like(a) for a in w]
    for t in range(steps):
        g = [gi + weight_decay * wi for gi, wi in zip(grad_fn(w, t), w)]
        if layerwise:
            g = [gi / max(global_norm([gi]), epsilon) for gi in g]
        else:
            n = max(global_norm(g), epsilon)
            g = [gi / n for gi in g]
        u = [momentum * ui + gi for ui, gi in zip(u, g)]
        w = [wi - lr_fn(t) * ui for wi, ui in zip(w, u)]
    return w, u


def msgd(weights, grad_fn, lr_fn, steps, momentum=0.9, weight_decay=0.0):
    """PyTorch SGD: u <- beta u + (g + wd w), w <- w - lr u."""
    w = [np.array(a, np.float64) for a in weights]
    u = [np.zeros_like(a) for a in w]
    for t in range(steps):
        g = [gi + weight_decay * wi for gi, wi in zip(grad_fn(w, t), w)]
        u = [momentum * ui + gi for ui, gi in zip(u, g)]
        w = [wi - lr_fn(t) * ui for wi, ui in zip(w, u)]
    return w, u


def lars(weights, grad_fn, lr_fn, steps, momentum=0.9, weight_decay=0.0, eta=0.001, pytorch_lars=False):
    """pytorch-lars; unless `pytorch_lars`, rank <= 1 variables are excluded
    from adaptation and decay. pytorch-lars itself (lars.py's step):
        local_lr = eta * ||w|| / (||g|| + wd * ||w||)
        buf = momentum * buf + local_lr * global_lr * (g + wd * w);  w -= buf
    for every parameter."""
    w = [np.array(a, np.float64) for a in weights]
    u = [np.zeros_like(a) for a in w]
    for t in range(steps):
        g = grad_fn(w, t)
        new_u = []
        for wi, gi, ui in zip(w, g, u):
            if wi.ndim <= 1 and not pytorch_lars:
                new_u.append(momentum * ui + lr_fn(t) * gi)
                continue
            wn, gn = np.linalg.norm(wi), np.linalg.norm(gi)
            trust = eta * wn / (gn + weight_decay * wn)
            new_u.append(momentum * ui + lr_fn(t) * trust * (gi + weight_decay * wi))
        u = new_u
        w = [wi - ui for wi, ui in zip(w, u)]
    return w, u
