"""Base class for our augmentation layers: batched, per-sample, seeded, tf.data-safe.

Keras's ``DataLayer`` (the base of its own preprocessing layers) switches a
layer to TensorFlow ops when it is called inside a ``tf.data`` graph, whatever
the Keras backend, and keeps a seed generator per backend. It is not exported
under ``keras.layers``; ``trainer.keras_private`` holds it with Keras's other
private names.
Subclasses write their maths with ``self.backend.numpy`` / ``.random`` /
``.image`` (the same functions as ``keras.ops``), never ``tf.*`` directly.
"""

from __future__ import annotations

import abc

import keras

from augment.reseeding import Reseedable, layer_generators
from trainer.keras_private import DataLayer, seed_generator


class AugmentLayer(DataLayer, Reseedable, metaclass=abc.ABCMeta):
    """A random op on a batch (B, H, W, C) of float images in 0..255.

    Every sample gets its own draw; ``seed`` makes a fresh layer repeat itself
    exactly, and ``reseed(position)`` keys its next draw on a batch position
    (``augment.reseeding``). Subclasses implement ``augment(images, seed)``, where
    ``seed`` is the layer's seed generator for the active backend.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        images = self.backend.cast(images, "float32")
        return self.augment(images, seed_generator(self))

    @abc.abstractmethod
    def augment(self, images, seed):
        """The op on float images (B, H, W, C) in 0..255; ``seed`` is the backend's seed generator."""

    def seed_generators(self, backend: str) -> list:
        """Its own generator, then those of the layers inside it (``RandomApply``'s op)."""
        return layer_generators(self, backend)

    # Helpers for subclasses ------------------------------------------------
    def batch_size(self, images):
        return self.backend.shape(images)[0]

    def uniform(self, batch_size, low, high, seed, extra=()):
        """One draw per sample (shape (B, *extra)) uniform in [low, high)."""
        return self.backend.random.uniform(
            (batch_size, *extra), minval=low, maxval=high, seed=seed)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
