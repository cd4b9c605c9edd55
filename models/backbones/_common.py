"""Building blocks shared by the backbone families.

Conventions follow insightface's PyTorch models so that ported weights give the
same outputs: BatchNorm with eps 1e-5 and PyTorch momentum 0.1 (Keras 0.9),
PReLU with one slope per channel initialised at 0.25, and symmetric padding
(PyTorch ``padding=1``) written as ``ZeroPadding2D`` + a ``"valid"`` conv,
because Keras ``"same"`` pads a stride-2 conv asymmetrically (0 before, 1 after).
"""

from __future__ import annotations

import contextlib

import keras

# The BatchNorm is shared with the necks, so it lives in models.layers (public to both).
from models.layers import batch_norm  # noqa: F401  (backbones import it from here)


def prelu(name: str | None = None) -> keras.layers.PReLU:
    """Per-channel PReLU (PyTorch ``nn.PReLU(C)``: slope 0.25 at start)."""
    return keras.layers.PReLU(
        alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2], name=name)


def activation(kind: str, name: str | None = None) -> keras.layers.Layer:
    """``prelu`` (per channel) or any Keras activation name (``relu``, ``swish``)."""
    if kind == "prelu":
        return prelu(name)
    return keras.layers.Activation(kind, name=name)


def padded_conv(filters: int, kernel: int, stride: int = 1, groups: int = 1,
                use_bias: bool = False, name: str | None = None,
                depthwise: bool = False) -> list[keras.layers.Layer]:
    """A conv with PyTorch-style symmetric padding ``kernel // 2``: [pad, conv].

    ``depthwise=True`` gives a ``DepthwiseConv2D`` (one filter per channel).
    """
    layers: list[keras.layers.Layer] = []
    pad = kernel // 2
    if pad:
        layers.append(keras.layers.ZeroPadding2D(pad, name=f"{name}_pad" if name else None))
    if depthwise:
        layers.append(keras.layers.DepthwiseConv2D(
            kernel, strides=stride, padding="valid", use_bias=use_bias, name=name))
    else:
        layers.append(keras.layers.Conv2D(
            filters, kernel, strides=stride, padding="valid", groups=groups,
            use_bias=use_bias, name=name))
    return layers


def apply(layers, x, **call_kwargs):
    """Run ``x`` through a list of layers (``training`` goes to those that take it)."""
    for layer in layers:
        x = layer(x, **call_kwargs) if call_kwargs and _takes_training(layer) else layer(x)
    return x


def _takes_training(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Dropout))


def remat_scope(remat: bool, layer_names: list[str]):
    """Gradient checkpointing of whole named blocks (not of every small layer).

    Keras rematerialises a layer created inside the scope whose name is listed,
    so only the block layers are recomputed in the backward pass; their inner
    activations are not kept. The flag is a training-time choice: a model
    loaded from ``.keras`` runs without it.
    """
    if not remat:
        return contextlib.nullcontext()
    return keras.RematScope(mode="list_of_layers", layer_names=list(layer_names))


def minimum_input_size(rule):
    """Declare a backbone's smallest input side as ``rule(**backbone_params) -> int``.

    The config check reads it to refuse a too-small ``data.image_size`` before
    any data is read; the factory uses the same rule when it builds.
    """

    def declare(factory):
        factory.minimum_input_size = rule
        return factory

    return declare


def check_input_shape(input_shape, name: str, minimum: int = 8) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or shape[-1] != 3 or min(shape[:2]) < minimum:
        from trainer.registry import ConfigError

        raise ConfigError(
            f"backbone '{name}' needs input_shape (H, W, 3) with H, W >= {minimum}, got {shape}")
    return shape
