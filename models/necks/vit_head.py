"""The feature head of insightface's face ViT: flatten tokens -> dense(D) -> BN -> dense -> BN.

Like the ``e`` neck it keeps each token's position (flatten, no pooling), but
first projects the 144·D features down to D, which keeps the head small
(144·D·D instead of 144·D·512 weights). Dense layers have no bias (BN follows);
the second dense and last BN run in float32.
"""

from __future__ import annotations

import keras

from models.necks._common import batch_norm
from models.submodel import LazySubmodel
from trainer.registry import NECKS, at_least


@NECKS.register("vit_head")
@at_least(embedding_dim=1, hidden_dim=1)
def vit_head_neck(embedding_dim: int = 512, hidden_dim: int | None = None):
    """Flatten -> dense(hidden_dim or D) -> BN -> dense(embedding_dim) -> BN."""

    def graph(x):
        width = hidden_dim or int(x.shape[-1])
        x = keras.layers.Flatten(name="flatten")(x)
        x = batch_norm("hidden_bn")(keras.layers.Dense(width, use_bias=False, name="hidden")(x))
        x = keras.layers.Dense(embedding_dim, use_bias=False, dtype="float32", name="fc")(x)
        return batch_norm("features", dtype="float32")(x)

    return LazySubmodel(graph, "vit_head_neck")
