"""Global average pooling neck: GAP -> dropout -> dense -> BN (the usual ImageNet-style head).

Position-invariant, so it suits backbones not trained on aligned crops and
token outputs (B, T, D), where it averages over the tokens. Dense and BN in float32.
"""

from __future__ import annotations

import keras

from models.necks._common import batch_norm
from models.submodel import LazySubmodel
from trainer.registry import NECKS, at_least


def global_average(x):
    """Mean over every axis but batch and channels, with built-in pooling layers."""
    if len(x.shape) == 4:
        return keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if len(x.shape) > 3:  # any other rank: positions on one axis first
        x = keras.layers.Reshape((-1, x.shape[-1]), name="positions")(x)
    if len(x.shape) == 3:
        return keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return x  # (B, C): nothing to pool


@NECKS.register("gap")
@at_least(embedding_dim=1, dropout=0)
def gap_neck(embedding_dim: int = 512, dropout: float = 0.0):
    """Mean over every axis but batch and channels -> dropout -> dense -> BN."""

    def graph(x):
        x = keras.layers.Dropout(dropout, name="dropout")(global_average(x))
        x = keras.layers.Dense(embedding_dim, dtype="float32", name="fc")(x)
        return batch_norm("features", dtype="float32")(x)

    return LazySubmodel(graph, "gap_neck")
