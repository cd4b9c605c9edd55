"""Vision Transformer for 112x112 faces (Dosovitskiy et al., ICLR 2021; insightface ``vit_t/vit_s``).

Patch 9 gives 12x12 = 144 tokens, no class token, learned position
embeddings, pre-norm blocks with a ReLU6 MLP, stochastic depth. The backbone
returns the tokens (B, 144, D); a neck (``e`` flattens them, ``gap`` averages)
turns them into the embedding.
"""

from __future__ import annotations

import keras

from models.backbones._common import check_input_shape, remat_scope
from trainer.registry import BACKBONES


@keras.saving.register_keras_serializable(package="facetrain")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned (T, D) position embedding to tokens (B, T, D)."""

    def build(self, input_shape):
        self.embedding = self.add_weight(
            shape=tuple(input_shape[1:]), name="embedding",
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))

    def call(self, tokens):
        return tokens + keras.ops.cast(self.embedding, tokens.dtype)


@keras.saving.register_keras_serializable(package="facetrain")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm block: x + DropPath(MHA(LN(x))); x + DropPath(MLP_relu6(LN(x)))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads, self.mlp_ratio, self.drop_path = dim, heads, mlp_ratio, drop_path
        self.seed = seed
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm1")
        self.attention = keras.layers.MultiHeadAttention(heads, dim // heads, name="attn")
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm2")
        self.fc1 = keras.layers.Dense(int(dim * mlp_ratio), activation="relu6", name="fc1")
        self.fc2 = keras.layers.Dense(dim, name="fc2")
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _drop_path(self, x, training):
        """Stochastic depth: drop the whole residual branch per sample (Huang et al., 2016)."""
        if not training or self.drop_path <= 0.0:
            return x
        keep = 1.0 - self.drop_path
        draw = keras.random.uniform((keras.ops.shape(x)[0], 1, 1), seed=self.seed_generator)
        mask = keras.ops.cast(draw < keep, x.dtype)
        return x * mask / keep

    def build(self, input_shape):
        # Explicit, so that a model loaded from .keras creates the weights before loading them.
        shape = tuple(input_shape)
        self.norm1.build(shape)
        self.attention.build(shape, shape)
        self.norm2.build(shape)
        self.fc1.build(shape)
        self.fc2.build(shape[:-1] + (int(self.dim * self.mlp_ratio),))
        self.built = True

    def call(self, x, training=None):
        y = self.norm1(x)
        x = x + self._drop_path(self.attention(y, y, training=training), training)
        y = self.fc2(self.fc1(self.norm2(x)))
        return x + self._drop_path(y, training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "heads": self.heads,
                "mlp_ratio": self.mlp_ratio, "drop_path": self.drop_path, "seed": self.seed}


def build_vit(input_shape=(112, 112, 3), patch_size: int = 9, dim: int = 256, depth: int = 12,
              heads: int = 8, mlp_ratio: float = 4.0, drop_path: float = 0.1,
              remat: bool = False, name: str = "vit") -> keras.Model:
    """Tokens (B, (H//patch)*(W//patch), dim); drop path grows linearly with depth."""
    check_input_shape(input_shape, name, minimum=patch_size)
    grid = (input_shape[0] // patch_size, input_shape[1] // patch_size)
    block_names = [f"block{i + 1}" for i in range(depth)]
    inputs = keras.Input(input_shape, name="image")
    with remat_scope(remat, block_names):
        x = keras.layers.Conv2D(dim, patch_size, strides=patch_size, name="patch_embed")(inputs)
        x = keras.layers.Reshape((grid[0] * grid[1], dim), name="tokens")(x)
        x = PositionEmbedding(name="pos_embed")(x)
        for i in range(depth):
            rate = drop_path * i / max(depth - 1, 1)
            x = TransformerBlock(dim, heads, mlp_ratio, rate, name=block_names[i])(x)
        x = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")(x)
    return keras.Model(inputs, x, name=name)


@BACKBONES.register("vit_t")
def vit_t(input_shape=(112, 112, 3), patch_size: int = 9, depth: int = 12, drop_path: float = 0.1,
          remat: bool = False) -> keras.Model:
    """ViT-T for faces: D 256, 12 blocks, 8 heads."""
    return build_vit(input_shape, patch_size, 256, depth, 8, 4.0, drop_path, remat, "vit_t")


@BACKBONES.register("vit_s")
def vit_s(input_shape=(112, 112, 3), patch_size: int = 9, depth: int = 12, drop_path: float = 0.1,
          remat: bool = False) -> keras.Model:
    """ViT-S for faces: D 512, 12 blocks, 8 heads."""
    return build_vit(input_shape, patch_size, 512, depth, 8, 4.0, drop_path, remat, "vit_s")
