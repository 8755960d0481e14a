"""The ImageNet transforms shared by the streamed inputs (TFDS ImageNet,
image folders): the random-resized crop's window, the flip, and the
evaluation's resize-and-centre-crop, as in the reference recipe (Szegedy et
al.'s crop as torchvision's RandomResizedCrop and TF Model Garden take it:
area 8-100% of the image, aspect ratio 3/4-4/3).

Every draw comes from a stateless key, so a crop is a function of the key."""

from __future__ import annotations

from . import constants as C

CROP_AREA = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10  # then the whole image, as TensorFlow's sampler falls back


def crop_window(tf, shape, key):
    """``[top, left, height, width]`` (int32) of a random-resized crop of an
    image of ``shape`` (``[H, W]`` or ``[H, W, C]``), drawn from ``key``."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=key,
        min_object_covered=0.0,
        aspect_ratio_range=CROP_RATIO,
        area_range=CROP_AREA,
        max_attempts=CROP_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])


def scale_and_offset(tf, mean, std):
    """``(scale, offset)`` per channel: ``x * scale + offset = (x / 255 - mean) / std``."""
    scale = tf.constant([1.0 / (255.0 * s) for s in std], tf.float32)
    return scale, tf.constant([-m / s for m, s in zip(mean, std)], tf.float32)


def normalizer(tf, mean, std, image_size):
    """float32 image of any size -> ``image_size`` square, bilinear, then
    ``(x / 255 - mean) / std`` per channel."""
    scale, offset = scale_and_offset(tf, mean, std)
    size = tf.constant([image_size, image_size])

    def normalize(image, resize=True):
        if resize:
            image = tf.image.resize(image, size, method="bilinear")
        return tf.ensure_shape(image * scale + offset, [image_size, image_size, 3])

    return normalize


def eval_crop(tf, image, image_size):
    """The evaluation view: the short side resized to ``image_size`` x 256/224
    (bilinear, float32), then the centre ``image_size`` square."""
    resize_to = int(round(image_size * C.IMAGENET_RESIZE_RATIO))
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    ratio = resize_to / tf.reduce_min(shape)
    new_shape = tf.maximum(tf.cast(tf.round(shape * ratio), tf.int32), image_size)
    image = tf.image.resize(image, new_shape, method="bilinear")
    top = (new_shape[0] - image_size) // 2
    left = (new_shape[1] - image_size) // 2
    return image[top : top + image_size, left : left + image_size]


def flip(tf, image, key):
    """A horizontal flip with probability 1/2, drawn from ``key``."""
    return tf.image.stateless_random_flip_left_right(image, seed=key)
