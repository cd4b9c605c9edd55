"""The "E" embedding head of ArcFace (Deng et al., CVPR 2019), as in insightface IResNet.

BN -> dropout -> flatten -> dense (with bias) -> BN whose gamma is fixed at 1.
Keeping the spatial layout (flatten, not pooling) is what makes face
embeddings position-aware on aligned crops. The dense layer and the last BN run
in float32 under mixed precision, as in insightface (``fc(x.float())``).
"""

from __future__ import annotations

import keras

from models.necks._common import Neck, batch_norm
from trainer.registry import NECKS


@NECKS.register("e")
@keras.saving.register_keras_serializable(package="facetrain")
class ENeck(Neck):
    """BN -> dropout -> flatten -> dense -> BN(fixed gamma); accepts maps or tokens."""

    def __init__(self, embedding_dim: int = 512, dropout: float = 0.0, **kwargs):
        super().__init__(embedding_dim=embedding_dim, **kwargs)
        self.dropout_rate = dropout
        self.input_bn = batch_norm("bn")
        self.dropout = keras.layers.Dropout(dropout, name="dropout")
        self.flatten = keras.layers.Flatten(name="flatten")
        self.dense = keras.layers.Dense(embedding_dim, dtype="float32", name="fc")
        self.features = batch_norm("features", fixed_gamma=True, dtype="float32")

    def call(self, inputs, training=None):
        x = self.input_bn(inputs, training=training)
        x = self.dropout(x, training=training)
        x = self.flatten(x)
        return self.features(self.dense(x), training=training)

    def get_config(self):
        return {**super().get_config(), "dropout": self.dropout_rate}
