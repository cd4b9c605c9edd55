"""Geometric augmentations: horizontal flip and random resized crop (ours), plus
Keras's rotation / translation / zoom / shear under short names.

Faces are aligned, so geometry changes are small on purpose: a vertical flip is
never useful, and a crop keeps most of the face.
"""

from __future__ import annotations

import math

import keras

from augment._base import AugmentLayer
from trainer.registry import AUGMENTS


@AUGMENTS.register("flip")
@keras.saving.register_keras_serializable(package="facetrain")
class HorizontalFlip(AugmentLayer):
    """Mirror left-right. Always flips: the pipeline's ``p`` (0.5) makes it random."""

    def augment(self, images, seed):
        return self.backend.numpy.flip(images, axis=2)


@AUGMENTS.register("random_resized_crop")
@keras.saving.register_keras_serializable(package="facetrain")
class RandomResizedCrop(AugmentLayer):
    """Crop a random box (area share in ``scale``, aspect ratio in ``ratio``) and resize
    it back to the input size (Szegedy et al., 2015; the SimCLR / AdaFace crop).

    One affine transform per sample, so boxes differ across the batch.
    """

    def __init__(self, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation: str = "bilinear",
                 seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.interpolation = interpolation

    def augment(self, images, seed):
        np_, shape = self.backend.numpy, self.backend.shape(images)
        batch = shape[0]
        height = self.backend.cast(shape[1], "float32")
        width = self.backend.cast(shape[2], "float32")
        area = self.uniform(batch, self.scale[0], self.scale[1], seed)
        log_ratio = self.uniform(batch, math.log(self.ratio[0]), math.log(self.ratio[1]), seed)
        ratio = np_.exp(log_ratio)
        # Box size as a share of the side; clipped so the box stays inside the image.
        crop_w = np_.clip(np_.sqrt(area * ratio), 0.05, 1.0)
        crop_h = np_.clip(np_.sqrt(area / ratio), 0.05, 1.0)
        left = self.uniform(batch, 0.0, 1.0, seed) * (1.0 - crop_w)
        top = self.uniform(batch, 0.0, 1.0, seed) * (1.0 - crop_h)
        zeros = np_.zeros_like(crop_w)
        # affine_transform maps output (x, y) to input (a0 x + a1 y + a2, b0 x + b1 y + b2).
        transform = np_.stack([crop_w, zeros, left * width, zeros, crop_h, top * height,
                               zeros, zeros], axis=1)
        return self.backend.image.affine_transform(
            images, transform, interpolation=self.interpolation, fill_mode="reflect")

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "ratio": self.ratio,
                "interpolation": self.interpolation}


# Keras's own per-sample layers under short names (any other: give its dotted path).
AUGMENTS.add("random_rotation", keras.layers.RandomRotation)
AUGMENTS.add("random_translation", keras.layers.RandomTranslation)
AUGMENTS.add("random_zoom", keras.layers.RandomZoom)
AUGMENTS.add("random_shear", keras.layers.RandomShear)
AUGMENTS.add("random_perspective", keras.layers.RandomPerspective)
