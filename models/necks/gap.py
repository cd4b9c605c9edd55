"""Global average pooling neck: GAP -> dropout -> dense -> BN (the usual ImageNet-style head).

Position-invariant, so it suits backbones not trained on aligned crops and
token outputs (B, T, D), where it averages over the tokens. Dense and BN in float32.
"""

from __future__ import annotations

import keras

from models.necks._common import Neck, batch_norm
from trainer.registry import NECKS


@NECKS.register("gap")
@keras.saving.register_keras_serializable(package="facetrain")
class GAPNeck(Neck):
    """Mean over every axis but batch and channels -> dropout -> dense -> BN."""

    def __init__(self, embedding_dim: int = 512, dropout: float = 0.0, **kwargs):
        super().__init__(embedding_dim=embedding_dim, **kwargs)
        self.dropout_rate = dropout
        self.dropout = keras.layers.Dropout(dropout, name="dropout")
        self.dense = keras.layers.Dense(embedding_dim, dtype="float32", name="fc")
        self.features = batch_norm("features", dtype="float32")

    def call(self, inputs, training=None):
        x = keras.ops.mean(inputs, axis=tuple(range(1, len(inputs.shape) - 1)))
        x = self.dropout(x, training=training)
        return self.features(self.dense(x), training=training)

    def get_config(self):
        return {**super().get_config(), "dropout": self.dropout_rate}
