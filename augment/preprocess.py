"""Preprocessing: pixel normalisation layer (registered), decoding/resizing and 5-point
face alignment helpers (plain functions used by the data pipelines).

The ``standard`` model sits first in the embedding model, so a saved model takes
raw RGB pixels in 0..255 and carries its own normalisation. Decoding and
alignment run in the input pipeline (TensorFlow / NumPy), before batching.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

# The template and its similarity transform are NumPy only, shared with photo alignment (trainer.faces).
from trainer.faces.template import ARCFACE_TEMPLATE, alignment_matrix  # noqa: F401 (re-exported)
from trainer.registry import PREPROCESSORS


@PREPROCESSORS.register("standard")
def standard_preprocess(mean: float | Sequence[float] = 127.5,
                        std: float | Sequence[float] = 127.5,
                        channel_order: str = "rgb") -> keras.Model:
    """RGB pixels 0..255 -> (x[channel_order] - mean) / std; default (x - 127.5) / 127.5.

    ``channel_order="bgr"`` reverses the channels first (weights converted from
    Caffe / OpenCV pipelines expect BGR). ``mean`` and ``std`` are one number or
    one per channel, given in the output channel order. Returns a functional
    model of built-in layers (any image size, 3 channels, float32 out), so a
    saved embedding model loads without this framework.
    """
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"preprocess channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    means, stds = _per_channel(mean, "mean"), _per_channel(std, "std")
    images = keras.Input((None, None, 3), name="pixels")
    x = reverse_channels(images) if channel_order == "bgr" else images
    # (x - mean) / sqrt(variance): exact for the default 127.5 (127.5² is a float32).
    x = keras.layers.Normalization(axis=-1, mean=means, variance=[s * s for s in stds],
                                   dtype="float32", name="normalize")(x)
    return keras.Model(images, x, name="standard_preprocess")


def _per_channel(value, name: str) -> list[float]:
    values = [float(v) for v in value] if isinstance(value, Sequence) else [float(value)] * 3
    if len(values) != 3:
        raise ValueError(f"preprocess {name} must be one number or 3 (one per channel), got {value!r}")
    return values


def reverse_channels(images):
    """RGB <-> BGR, exactly (no arithmetic), with built-in layers.

    ``Cropping2D`` in ``channels_first`` mode crops the last two axes of
    (B, H, W, C), which here selects one channel of the last axis.
    """
    channels = [keras.layers.Cropping2D(((0, 0), (c, 2 - c)), data_format="channels_first",
                                        name=f"channel_{c}")(images) for c in (2, 1, 0)]
    return keras.layers.Concatenate(axis=-1, name="bgr")(channels)


# -- decoding (tf.data) -------------------------------------------------------------
def decode_image(data, channels: int = 3):
    """Encoded bytes (JPEG/PNG/BMP/GIF first frame) -> uint8 (H, W, channels) tf tensor."""
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


def resize_image(image, size: int | Sequence[int], method: str = "bilinear",
                 antialias: bool = True):
    """Any image (H, W, C) or batch -> float32 ``size`` (an int for square), pixels kept 0..255."""
    import tensorflow as tf

    size = (size, size) if isinstance(size, int) else tuple(size)
    image = tf.cast(image, tf.float32)
    return tf.clip_by_value(tf.image.resize(image, size, method=method, antialias=antialias),
                            0.0, 255.0)


def decode_and_resize(data, size: int | Sequence[int] = 112, channels: int = 3,
                      method: str = "bilinear", antialias: bool = True):
    """Encoded bytes -> float32 (size, size, channels) in 0..255 (RGB), for tf.data ``map``."""
    return resize_image(decode_image(data, channels), size, method, antialias)


# -- 5-point alignment ----------------------------------------------------------------
def align_face(image, landmarks, image_size: int = 112):
    """Warp ``image`` (H, W, 3) so that its 5 landmarks land on the ArcFace template.

    Returns float32 (image_size, image_size, 3), pixels in the input's range,
    bilinear, zeros outside. TensorFlow op, eager or in tf.data (landmarks as NumPy).
    """
    import tensorflow as tf

    inverse = np.linalg.inv(alignment_matrix(landmarks, image_size))  # output -> input
    transform = tf.constant(inverse.reshape(-1)[:8][None], tf.float32)
    image = tf.cast(tf.convert_to_tensor(image), tf.float32)[None]
    aligned = tf.raw_ops.ImageProjectiveTransformV3(
        images=image, transforms=transform, output_shape=tf.constant([image_size, image_size]),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    return aligned[0]
