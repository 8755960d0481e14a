"""What both tf.data pipelines (in memory and ImageNet) start from:
TensorFlow imported off the accelerators, and the per-epoch random key."""

from __future__ import annotations

import os
import sys

_SEED_SALT = 0x53474D  # "SGM": separates our streams from other uses of `seed`


def import_tf():
    """Imports TensorFlow for the input pipeline.

    When Keras runs on another backend (JAX, torch), TensorFlow is only used
    for tf.data and is kept off the GPUs, so it does not reserve their memory
    (as the Keras docs recommend).  This only works before TensorFlow has
    initialized its devices; otherwise it is left as is.
    """
    import tensorflow as tf

    keras = sys.modules.get("keras")
    backend = None
    if keras is not None and hasattr(keras, "config"):
        try:
            backend = keras.config.backend()
        except Exception:  # pragma: no cover
            backend = None
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow":
        try:
            tf.config.set_visible_devices([], "GPU")
        except (RuntimeError, ValueError):
            pass
    return tf


def epoch_key(tf, seed: int, epoch):
    """Stateless-RNG key (int64 [2]) for epoch ``epoch`` (int or scalar tensor)."""
    base = tf.constant([int(seed), _SEED_SALT], dtype=tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))
