"""The "E" embedding head of ArcFace (Deng et al., CVPR 2019), as in insightface IResNet.

BN -> dropout -> flatten -> dense (with bias) -> BN whose gamma is fixed at 1.
Keeping the spatial layout (flatten, not pooling) is what makes face
embeddings position-aware on aligned crops. The dense layer and the last BN run
in float32 under mixed precision, as in insightface (``fc(x.float())``).
"""

from __future__ import annotations

import keras

from models.necks._common import batch_norm, fixed_gamma_batch_norm
from models.submodel import LazySubmodel
from trainer.registry import NECKS, at_least


@NECKS.register("e")
@at_least(embedding_dim=1, dropout=0)
def e_neck(embedding_dim: int = 512, dropout: float = 0.0):
    """BN -> dropout -> flatten -> dense -> BN(fixed gamma); accepts maps or tokens."""

    def graph(x):
        x = batch_norm("bn")(x)
        x = keras.layers.Dropout(dropout, name="dropout")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(embedding_dim, dtype="float32", name="fc")(x)
        return fixed_gamma_batch_norm(x, "features", dtype="float32")

    return LazySubmodel(graph, "e_neck")
