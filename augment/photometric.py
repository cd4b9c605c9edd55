"""Photometric augmentations: Keras's colour, blur, erasing and policy layers under short names.

The registered Keras 3 preprocessing layers are per sample, seeded, tf.data-safe
on every backend, and their ``value_range`` defaults to (0, 255), our pixel range.
Keras's ``RandomGaussianBlur`` draws one sigma per batch, so ``gaussian_blur``
is ours: a separable Gaussian whose sigma is drawn per sample.
"""

from __future__ import annotations

import keras

from augment._base import AugmentLayer
from trainer.registry import AUGMENTS


@AUGMENTS.register("gaussian_blur")
@keras.saving.register_keras_serializable(package="facetrain")
class GaussianBlur(AugmentLayer):
    """Separable Gaussian blur, sigma uniform in ``sigma`` per sample (SimCLR's blur).

    Each sample's 1-D kernel weights the ``kernel_size`` shifted copies of the
    image, first along rows, then along columns (reflect padding).
    """

    def __init__(self, sigma=(0.1, 2.0), kernel_size: int = 7, seed: int | None = None,
                 **kwargs):
        super().__init__(seed=seed, **kwargs)
        if kernel_size % 2 != 1:
            raise ValueError(f"gaussian_blur kernel_size must be odd, got {kernel_size}")
        self.sigma = tuple(sigma)
        self.kernel_size = int(kernel_size)

    def augment(self, images, seed):
        np_ = self.backend.numpy
        radius = self.kernel_size // 2
        sigma = self.uniform(self.batch_size(images), self.sigma[0], self.sigma[1], seed)
        offsets = np_.arange(-radius, radius + 1, dtype="float32")
        weights = np_.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)
        weights = weights / np_.sum(weights, axis=1, keepdims=True)  # (B, K)
        height, width = int(images.shape[1]), int(images.shape[2])
        padded = np_.pad(images, ((0, 0), (radius, radius), (0, 0), (0, 0)), mode="reflect")
        rows = sum(np_.reshape(weights[:, k], (-1, 1, 1, 1)) * padded[:, k:k + height]
                   for k in range(self.kernel_size))
        padded = np_.pad(rows, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode="reflect")
        return sum(np_.reshape(weights[:, k], (-1, 1, 1, 1)) * padded[:, :, k:k + width]
                   for k in range(self.kernel_size))

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma, "kernel_size": self.kernel_size}



AUGMENTS.add("color_jitter", keras.layers.RandomColorJitter)
AUGMENTS.add("random_brightness", keras.layers.RandomBrightness)
AUGMENTS.add("random_contrast", keras.layers.RandomContrast)
AUGMENTS.add("random_saturation", keras.layers.RandomSaturation)
AUGMENTS.add("random_hue", keras.layers.RandomHue)
AUGMENTS.add("grayscale", keras.layers.RandomGrayscale)
AUGMENTS.add("random_erasing", keras.layers.RandomErasing)
AUGMENTS.add("rand_augment", keras.layers.RandAugment)
AUGMENTS.add("solarization", keras.layers.Solarization)
AUGMENTS.add("random_sharpness", keras.layers.RandomSharpness)
