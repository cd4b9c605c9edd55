"""Global depthwise convolution (GDC) head of MobileFaceNet (Chen et al., 2018).

A linear depthwise conv whose kernel covers the whole final feature map (7x7
at 112x112 input) weighs each position per channel, then BN -> dense (no bias)
-> BN. The kernel size is taken from the input when the neck is first called,
so it also works at small test resolutions. Dense and last BN run in float32.
"""

from __future__ import annotations

import keras

from models.necks._common import batch_norm
from models.submodel import LazySubmodel
from trainer.registry import NECKS, ConfigError, at_least


@NECKS.register("gdc")
@at_least(embedding_dim=1)
def gdc_neck(embedding_dim: int = 512):
    """Depthwise conv over the full (h, w) map -> BN -> flatten -> dense -> BN."""

    def graph(x):
        if len(x.shape) != 4:
            raise ConfigError(f"neck 'gdc' needs a feature map (B, h, w, C), got shape "
                              f"{tuple(x.shape)}; use neck=gap or neck=e for token outputs")
        x = keras.layers.DepthwiseConv2D(tuple(x.shape[1:3]), padding="valid", use_bias=False,
                                         name="gdc_conv")(x)
        x = keras.layers.Flatten(name="flatten")(batch_norm("gdc_bn")(x))
        x = keras.layers.Dense(embedding_dim, use_bias=False, dtype="float32", name="fc")(x)
        return batch_norm("features", dtype="float32")(x)

    return LazySubmodel(graph, "gdc_neck")
