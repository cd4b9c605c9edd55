"""The feature head of insightface's face ViT: flatten tokens -> dense(D) -> BN -> dense -> BN.

Like the ``e`` neck it keeps each token's position (flatten, no pooling), but
first projects the 144·D features down to D, which keeps the head small
(144·D·D instead of 144·D·512 weights). Dense layers have no bias (BN follows);
the second dense and last BN run in float32.
"""

from __future__ import annotations

import keras

from models.necks._common import Neck, batch_norm
from trainer.registry import NECKS


@NECKS.register("vit_head")
@keras.saving.register_keras_serializable(package="facetrain")
class ViTHeadNeck(Neck):
    """Flatten -> dense(hidden_dim or D) -> BN -> dense(embedding_dim) -> BN."""

    def __init__(self, embedding_dim: int = 512, hidden_dim: int | None = None, **kwargs):
        super().__init__(embedding_dim=embedding_dim, **kwargs)
        self.hidden_dim = hidden_dim
        self.flatten = keras.layers.Flatten(name="flatten")
        self.hidden_bn = batch_norm("hidden_bn")
        self.dense = keras.layers.Dense(embedding_dim, use_bias=False, dtype="float32", name="fc")
        self.features = batch_norm("features", dtype="float32")

    def build(self, input_shape):
        width = self.hidden_dim or int(input_shape[-1])
        flat = 1
        for d in input_shape[1:]:
            flat *= int(d)
        self.hidden = keras.layers.Dense(width, use_bias=False, name="hidden")
        self.hidden.build((input_shape[0], flat))
        self.hidden_bn.build((input_shape[0], width))
        self.dense.build((input_shape[0], width))
        self.features.build((input_shape[0], self.embedding_dim))
        self.built = True

    def call(self, inputs, training=None):
        x = self.hidden_bn(self.hidden(self.flatten(inputs)), training=training)
        return self.features(self.dense(x), training=training)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim}
