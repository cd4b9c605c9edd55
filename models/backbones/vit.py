"""Vision Transformer for 112x112 faces (Dosovitskiy et al., ICLR 2021; insightface ``vit_t/vit_s``).

Patch 9 gives 12x12 = 144 tokens, no class token, learned position
embeddings, pre-norm blocks with a ReLU6 MLP, stochastic depth. The backbone
returns the tokens (B, 144, D); a neck (``e`` flattens them, ``gap`` averages)
turns them into the embedding.
"""

from __future__ import annotations

import keras

from models.backbones._common import check_input_shape, minimum_input_size, remat_scope
from models.submodel import submodel
from trainer.registry import BACKBONES


def add_position_embedding(tokens, name: str = "pos_embed"):
    """tokens (B, T, D) + a learned (T, D) position embedding, from built-in layers only.

    ``EinsumDense("btd,td->btd")`` on a tensor of ones is exactly the (T, D)
    weight broadcast over the batch (ones times the weight, no sum), so the
    saved graph needs no custom layer and the weight count is T·D as before.
    """
    steps, dim = tokens.shape[1:]
    ones = keras.layers.Rescaling(0.0, offset=1.0, name=f"{name}_ones")(tokens)
    embedding = keras.layers.EinsumDense(
        "btd,td->btd", output_shape=(steps, dim), name=name,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02))(ones)
    return keras.layers.Add(name=f"{name}_add")([tokens, embedding])


def stochastic_depth(x, rate: float, name: str):
    """Stochastic depth (Huang et al., 2016): drop the whole residual branch per sample.

    A ``Dropout`` whose noise has one value per sample (``noise_shape`` (B, 1, 1));
    it scales kept samples by 1 / (1 - rate), like the reference.
    """
    if rate <= 0.0:
        return x
    return keras.layers.Dropout(rate, noise_shape=(None, 1, 1), name=name)(x)


def transformer_block(input_shape, heads: int, mlp_ratio: float = 4.0, drop_rate: float = 0.0,
                      dtype="float32", name: str = "block") -> keras.Model:
    """Pre-norm block: x + DropPath(MHA(LN(x))); x + DropPath(MLP_relu6(LN(x))), as a functional model."""
    dim = int(input_shape[-1])

    def graph(x):
        y = keras.layers.LayerNormalization(epsilon=1e-5, name="norm1")(x)
        y = keras.layers.MultiHeadAttention(heads, dim // heads, name="attn")(y, y)
        x = keras.layers.Add(name="add1")([x, stochastic_depth(y, drop_rate, "drop_path1")])
        y = keras.layers.LayerNormalization(epsilon=1e-5, name="norm2")(x)
        y = keras.layers.Dense(int(dim * mlp_ratio), activation="relu6", name="fc1")(y)
        y = keras.layers.Dense(dim, name="fc2")(y)
        return keras.layers.Add(name="add2")([x, stochastic_depth(y, drop_rate, "drop_path2")])

    return submodel(graph, input_shape, dtype, name)


def build_vit(input_shape=(112, 112, 3), patch_size: int = 9, dim: int = 256, depth: int = 12,
              heads: int = 8, mlp_ratio: float = 4.0, drop_path: float = 0.1,
              remat: bool = False, name: str = "vit") -> keras.Model:
    """Tokens (B, (H//patch)*(W//patch), dim); drop path grows linearly with depth."""
    check_input_shape(input_shape, name, minimum=smallest_input(patch_size))
    grid = (input_shape[0] // patch_size, input_shape[1] // patch_size)
    block_names = [f"block{i + 1}" for i in range(depth)]
    inputs = keras.Input(input_shape, name="image")
    with remat_scope(remat, block_names):
        x = keras.layers.Conv2D(dim, patch_size, strides=patch_size, name="patch_embed")(inputs)
        x = keras.layers.Reshape((grid[0] * grid[1], dim), name="tokens")(x)
        x = add_position_embedding(x, "pos_embed")
        for i in range(depth):
            rate = drop_path * i / max(depth - 1, 1)
            x = transformer_block(x.shape[1:], heads, mlp_ratio, rate, x.dtype, block_names[i])(x)
        x = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")(x)
    return keras.Model(inputs, x, name=name)


def smallest_input(patch_size=9, **_) -> int:
    """One patch at least."""
    return int(patch_size)


@BACKBONES.register("vit_t")
@minimum_input_size(smallest_input)
def vit_t(input_shape=(112, 112, 3), patch_size: int = 9, depth: int = 12, drop_path: float = 0.1,
          remat: bool = False) -> keras.Model:
    """ViT-T for faces: D 256, 12 blocks, 8 heads."""
    return build_vit(input_shape, patch_size, 256, depth, 8, 4.0, drop_path, remat, "vit_t")


@BACKBONES.register("vit_s")
@minimum_input_size(smallest_input)
def vit_s(input_shape=(112, 112, 3), patch_size: int = 9, depth: int = 12, drop_path: float = 0.1,
          remat: bool = False) -> keras.Model:
    """ViT-S for faces: D 512, 12 blocks, 8 heads."""
    return build_vit(input_shape, patch_size, 512, depth, 8, 4.0, drop_path, remat, "vit_s")
