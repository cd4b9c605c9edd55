"""Global depthwise convolution (GDC) head of MobileFaceNet (Chen et al., 2018).

A linear depthwise conv whose kernel covers the whole final feature map (7x7
at 112x112 input) weighs each position per channel, then BN -> dense (no bias)
-> BN. The kernel size is taken from the input at build time, so the neck also
works at small test resolutions. Dense and last BN run in float32.
"""

from __future__ import annotations

import keras

from models.necks._common import Neck, batch_norm
from trainer.registry import NECKS


@NECKS.register("gdc")
@keras.saving.register_keras_serializable(package="facetrain")
class GDCNeck(Neck):
    """Depthwise conv over the full (h, w) map -> BN -> flatten -> dense -> BN."""

    def __init__(self, embedding_dim: int = 512, **kwargs):
        super().__init__(embedding_dim=embedding_dim, **kwargs)
        self.depthwise_bn = batch_norm("gdc_bn")
        self.flatten = keras.layers.Flatten(name="flatten")
        self.dense = keras.layers.Dense(embedding_dim, use_bias=False, dtype="float32", name="fc")
        self.features = batch_norm("features", dtype="float32")

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"gdc neck needs a feature map (B, h, w, C), got shape {input_shape}")
        self.depthwise = keras.layers.DepthwiseConv2D(
            tuple(input_shape[1:3]), padding="valid", use_bias=False, name="gdc_conv")
        self.depthwise.build(input_shape)
        self.depthwise_bn.build((input_shape[0], 1, 1, input_shape[3]))
        self.dense.build((input_shape[0], input_shape[3]))
        self.features.build((input_shape[0], self.embedding_dim))
        self.built = True

    def call(self, inputs, training=None):
        x = self.depthwise_bn(self.depthwise(inputs), training=training)
        return self.features(self.dense(self.flatten(x)), training=training)
