"""Image preprocessing as a Keras layer, so it runs on the device.

`CropFlipNormalize` takes uint8 (or 0..255 float) NHWC images and returns
``(x / 255 - mean) / std`` per channel in float32, computed as
``x * (1 / (255 std)) + (-mean / std)`` like the tf.data pipelines of
`sngm_keras.data`. Given per-example random draws it first applies the
CIFAR training augmentation of those pipelines: zero-pad ``pad`` pixels on
every side, crop back to the original size at offsets (dy, dx), and flip
horizontally. One int32 draw per example in ``[0, num_draws(pad))`` encodes
``flip = d % 2, dx = (d // 2) % (2 pad + 1), dy = (d // 2) // (2 pad + 1)``,
the encoding the tf.data pipeline uses.

The draws are an input, not a `SeedGenerator`'s: the JAX input path
(the PyDataset feed, `sngm_keras.data.pydatasets`) draws them on the host from (seed, epoch),
so an example's augmentation depends only on (seed, epoch, its place in the
epoch) -- not on the micro-batch size, the number of devices, or the state
of a generator -- and a resumed run sees exactly the images an uninterrupted
one sees. Only keras.ops: it runs on every backend.
"""

import keras
from keras import ops


def num_draws(pad):
    """Distinct (dy, dx, flip) choices for `pad` pixels of padding."""
    choices = 2 * int(pad) + 1
    return 2 * choices * choices


def pad_crop_flip(images, draws, pad):
    """Per-example pad, crop and flip of NHWC `images` (any dtype) by `draws`."""
    height, width = images.shape[1], images.shape[2]
    choices = 2 * pad + 1
    draws = ops.cast(draws, "int32")
    flip = ops.equal(draws % 2, 1)
    dx = (draws // 2) % choices
    dy = (draws // 2) // choices
    padded = ops.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    rows = ops.arange(height, dtype="int32")
    cols = ops.arange(width, dtype="int32")
    row_idx = dy[:, None] + rows[None, :]  # [N, H]
    col_idx = ops.where(flip[:, None], dx[:, None] + (width - 1 - cols)[None, :], dx[:, None] + cols[None, :])
    n, channels = ops.shape(images)[0], images.shape[3]
    row_idx = ops.broadcast_to(row_idx[:, :, None, None], (n, height, width + 2 * pad, channels))
    out = ops.take_along_axis(padded, row_idx, axis=1)  # [N, H, W + 2 pad, C]
    col_idx = ops.broadcast_to(col_idx[:, None, :, None], (n, height, width, channels))
    return ops.take_along_axis(out, col_idx, axis=2)  # [N, H, W, C]


@keras.saving.register_keras_serializable(package="sngm_keras")
class CropFlipNormalize(keras.layers.Layer):
    """uint8 images -> normalized float32 images, augmented when draws are given.

    Call with ``images`` or ``{"images": images, "crop_flip": draws}``; the
    draws are used only with ``training=True`` (see the module docstring).
    Computes in float32 whatever the global dtype policy (the model casts).
    """

    def __init__(self, mean, std, pad=4, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.pad = int(pad)
        self._scale = [1.0 / (255.0 * s) for s in self.std]
        self._offset = [-m / s for m, s in zip(self.mean, self.std)]

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            images, draws = inputs["images"], inputs.get("crop_flip")
        else:
            images, draws = inputs, None
        if training and draws is not None:
            images = pad_crop_flip(images, draws, self.pad)
        scale = ops.convert_to_tensor(self._scale, "float32")
        offset = ops.convert_to_tensor(self._offset, "float32")
        return ops.cast(images, "float32") * scale + offset

    def compute_output_shape(self, input_shape):
        shape = input_shape["images"] if isinstance(input_shape, dict) else input_shape
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std), "pad": self.pad}
