"""Face-specific augmentations that mimic real photos of aligned faces.

* ``low_resolution``: down-and-up resampling (surveillance / thumbnail faces;
  AdaFace, Kim et al., CVPR 2022, trains with it).
* ``jpeg``: JPEG re-compression artefacts at a random quality.
* ``occlusion``: synthetic occluders at face-template positions: a face mask
  over nose and mouth, a sunglasses-like bar over the eyes, or a random patch.
"""

from __future__ import annotations

import keras

from augment._base import AugmentLayer
from trainer.registry import AUGMENTS

# Rows of the ArcFace 112x112 template as shares of the height: eyes ~0.46, nose tip ~0.64.
_EYE_ROW = 0.46
_NOSE_ROW = 0.64


@AUGMENTS.register("low_resolution")
@keras.saving.register_keras_serializable(package="facetrain")
class LowResolution(AugmentLayer):
    """Downscale by a factor in ``scale`` (antialiased), then upscale back (bilinear).

    Per-sample factors are drawn from ``levels`` evenly spaced values in
    ``scale``: a batch needs static shapes, so each level is resized once for
    the whole batch and every sample picks its own level.
    """

    def __init__(self, scale=(0.2, 1.0), levels: int = 5, interpolation: str = "bilinear",
                 seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.scale = tuple(scale)
        self.levels = int(levels)
        self.interpolation = interpolation

    def augment(self, images, seed):
        np_, image = self.backend.numpy, self.backend.image
        height, width = int(images.shape[1]), int(images.shape[2])
        step = (self.scale[1] - self.scale[0]) / max(self.levels - 1, 1)
        candidates = []
        for level in range(self.levels):
            factor = self.scale[0] + level * step
            small = (max(int(round(height * factor)), 1), max(int(round(width * factor)), 1))
            down = image.resize(images, small, interpolation="bilinear", antialias=True)
            candidates.append(image.resize(down, (height, width), interpolation=self.interpolation))
        choice = self.backend.cast(
            np_.floor(self.uniform(self.batch_size(images), 0.0, float(self.levels), seed)), "int32")
        choice = np_.minimum(choice, self.levels - 1)
        stacked = np_.stack(candidates, axis=1)  # (B, levels, H, W, C)
        picked = np_.take_along_axis(stacked, np_.reshape(choice, (-1, 1, 1, 1, 1)), axis=1)
        return np_.clip(np_.squeeze(picked, axis=1), 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "levels": self.levels,
                "interpolation": self.interpolation}


@AUGMENTS.register("jpeg")
@keras.saving.register_keras_serializable(package="facetrain")
class JpegCompression(AugmentLayer):
    """Re-encode each image as JPEG at a quality drawn in ``quality`` and decode it.

    Uses ``tf.image.adjust_jpeg_quality``: it runs inside ``tf.data`` with any
    Keras backend (the layer switches to TensorFlow there) and eagerly under the
    TensorFlow backend, but not in a JAX-backend model (there is no JAX codec).
    """

    def __init__(self, quality=(30, 95), seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.quality = tuple(int(q) for q in quality)

    def augment(self, images, seed):
        if self.backend.name != "tensorflow":
            raise RuntimeError("augment 'jpeg' needs TensorFlow: use it inside the tf.data "
                               "pipeline (any backend) or with KERAS_BACKEND=tensorflow")
        import tensorflow as tf

        quality = tf.cast(tf.floor(self.uniform(
            tf.shape(images)[0], float(self.quality[0]), float(self.quality[1]) + 1.0, seed)),
            tf.int32)

        def recompress(args):
            image, q = args
            encoded = tf.image.adjust_jpeg_quality(tf.clip_by_value(image / 255.0, 0.0, 1.0), q)
            return tf.reshape(encoded, tf.shape(image)) * 255.0

        return tf.map_fn(recompress, (images, quality), fn_output_signature=tf.float32)

    def get_config(self):
        return {**super().get_config(), "quality": self.quality}


@AUGMENTS.register("occlusion")
@keras.saving.register_keras_serializable(package="facetrain")
class Occlusion(AugmentLayer):
    """Paint one occluder per sample, its kind drawn from ``kinds``.

    ``mask``: a face mask from just above the nose tip down to the chin;
    ``sunglasses``: a dark bar across the eyes; ``patch``: a rectangle of
    ``patch_area`` share anywhere. Positions follow the aligned-face template
    with a little jitter; colours are random (dark for sunglasses).
    """

    KINDS = ("mask", "sunglasses", "patch")

    def __init__(self, kinds=("mask", "sunglasses", "patch"), patch_area=(0.05, 0.2),
                 seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        unknown = [k for k in kinds if k not in self.KINDS]
        if unknown or not kinds:
            raise ValueError(f"occlusion kinds must be among {self.KINDS}, got {list(kinds)}")
        self.kinds = tuple(kinds)
        self.patch_area = tuple(patch_area)

    def _boxes(self, kind, batch, seed):
        """(top, bottom, left, right) as shares of the side, one per sample."""
        u = lambda lo, hi: self.uniform(batch, lo, hi, seed)  # noqa: E731
        if kind == "mask":
            top = u(_NOSE_ROW - 0.12, _NOSE_ROW - 0.02)
            return top, u(0.95, 1.01), u(0.10, 0.22), u(0.78, 0.90)
        if kind == "sunglasses":
            centre, half = u(_EYE_ROW - 0.04, _EYE_ROW + 0.03), u(0.05, 0.09)
            return centre - half, centre + half, u(0.10, 0.20), u(0.80, 0.90)
        side = self.backend.numpy.sqrt(u(*self.patch_area))
        top, left = u(0.0, 1.0) * (1.0 - side), u(0.0, 1.0) * (1.0 - side)
        return top, top + side, left, left + side

    def augment(self, images, seed):
        np_ = self.backend.numpy
        batch, height, width = self.batch_size(images), int(images.shape[1]), int(images.shape[2])
        rows = np_.reshape((np_.arange(height, dtype="float32") + 0.5) / height, (1, -1, 1))
        cols = np_.reshape((np_.arange(width, dtype="float32") + 0.5) / width, (1, 1, -1))
        which = self.backend.cast(
            np_.floor(self.uniform(batch, 0.0, float(len(self.kinds)), seed)), "int32")
        covered = None
        for index, kind in enumerate(self.kinds):
            top, bottom, left, right = (np_.reshape(v, (-1, 1, 1))
                                        for v in self._boxes(kind, batch, seed))
            inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
            inside = inside & np_.reshape(which == index, (-1, 1, 1))
            covered = inside if covered is None else covered | inside
        dark = np_.reshape(which == self.kinds.index("sunglasses") if "sunglasses" in self.kinds
                           else np_.zeros_like(which, dtype="bool"), (-1, 1, 1, 1))
        colour = self.uniform(batch, 0.0, 255.0, seed, extra=(1, 1, 3))
        colour = np_.where(dark, colour * 0.2, colour)
        return np_.where(np_.expand_dims(covered, -1), colour, images)

    def get_config(self):
        return {**super().get_config(), "kinds": self.kinds, "patch_area": self.patch_area}
