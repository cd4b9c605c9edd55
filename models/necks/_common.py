"""Layers shared by the necks."""

from __future__ import annotations

import keras

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # PyTorch momentum=0.1 (insightface)


@keras.saving.register_keras_serializable(package="facetrain")
class FixedGammaBatchNorm(keras.layers.BatchNormalization):
    """BatchNorm whose gamma exists (fixed at 1) but is not trained.

    insightface's ``features`` BN sets ``weight.requires_grad = False``; keeping
    the weight (rather than ``scale=False``) keeps the parameter count and the
    weight layout identical to the reference, so ported checkpoints load 1:1.
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.gamma.trainable = False


def batch_norm(name=None, fixed_gamma=False, **kwargs):
    cls = FixedGammaBatchNorm if fixed_gamma else keras.layers.BatchNormalization
    return cls(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name, **kwargs)


class Neck(keras.layers.Layer):
    """Base: maps a backbone output (B, h, w, C) or tokens (B, T, D) to (B, embedding_dim)."""

    def __init__(self, embedding_dim: int = 512, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = embedding_dim

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embedding_dim)

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim}
