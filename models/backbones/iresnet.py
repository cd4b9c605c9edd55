"""IResNet (Deng et al., ArcFace, CVPR 2019; insightface ``arcface_torch``).

A ResNet for 112x112 faces: no max-pool, pre-activation style blocks
``BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN`` plus a shortcut, four
stages of widths 64/128/256/512 that each halve the resolution (112 -> 7).
Built to match insightface exactly (symmetric padding, stride on the second
conv, per-channel PReLU, BN eps 1e-5), so its weights and recipes carry over.
The embedding head ("E": BN -> dropout -> flatten -> dense -> BN) is the ``e``
neck; backbone + ``e`` neck reproduce the reference parameter counts.
"""

from __future__ import annotations

import keras

from models.backbones._common import (
    apply, batch_norm, check_input_shape, padded_conv, prelu, remat_scope)
from trainer.registry import BACKBONES

STAGE_WIDTHS = (64, 128, 256, 512)
DEPTHS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}


@keras.saving.register_keras_serializable(package="facetrain")
class IResNetBlock(keras.layers.Layer):
    """insightface ``IBasicBlock``: the stride sits on the second 3x3 conv.

    ``downsample`` adds the projection shortcut (1x1 conv, stride, + BN) used
    whenever the width or resolution changes; otherwise the shortcut is the input.
    """

    def __init__(self, filters: int, stride: int = 1, downsample: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.stride = stride
        self.downsample = downsample
        self.bn1 = batch_norm("bn1")
        self.conv1 = padded_conv(filters, 3, 1, name="conv1")
        self.bn2 = batch_norm("bn2")
        self.prelu = prelu("prelu")
        self.conv2 = padded_conv(filters, 3, stride, name="conv2")
        self.bn3 = batch_norm("bn3")
        if downsample:
            self.shortcut_conv = keras.layers.Conv2D(
                filters, 1, strides=stride, use_bias=False, name="downsample_conv")
            self.shortcut_bn = batch_norm("downsample_bn")

    def build(self, input_shape):
        # Explicit, so that a model loaded from .keras creates the weights before loading them.
        shape = tuple(input_shape)
        self.bn1.build(shape)
        shape = _build_all(self.conv1, shape)
        self.bn2.build(shape)
        self.prelu.build(shape)
        shape = _build_all(self.conv2, shape)
        self.bn3.build(shape)
        if self.downsample:
            self.shortcut_conv.build(tuple(input_shape))
            self.shortcut_bn.build(shape)
        self.built = True

    def call(self, inputs, training=None):
        x = self.bn1(inputs, training=training)
        x = apply(self.conv1, x)
        x = self.bn2(x, training=training)
        x = self.prelu(x)
        x = apply(self.conv2, x)
        x = self.bn3(x, training=training)
        shortcut = inputs
        if self.downsample:
            shortcut = self.shortcut_bn(self.shortcut_conv(inputs), training=training)
        return x + shortcut  # no activation after the add (insightface)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        shrink = (lambda d: None if d is None else (d - 1) // self.stride + 1)
        return (batch, shrink(height), shrink(width), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride,
                "downsample": self.downsample}


def _build_all(layers, shape):
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape


def build_iresnet(input_shape=(112, 112, 3), layers=(3, 4, 14, 3), widths=STAGE_WIDTHS,
                  stem_width: int = 64, remat: bool = False, name: str = "iresnet") -> keras.Model:
    """IResNet with ``layers[i]`` blocks in stage ``i``; output (B, H/16, W/16, widths[-1])."""
    check_input_shape(input_shape, name, minimum=16)
    block_names = [f"stage{s + 1}_block{b + 1}" for s, n in enumerate(layers) for b in range(n)]
    inputs = keras.Input(input_shape, name="image")
    with remat_scope(remat, block_names):
        x = apply(padded_conv(stem_width, 3, 1, name="stem_conv"), inputs)
        x = batch_norm("stem_bn")(x)
        x = prelu("stem_prelu")(x)
        channels = stem_width
        for stage, (blocks, width) in enumerate(zip(layers, widths)):
            for block in range(blocks):
                stride = 2 if block == 0 else 1
                x = IResNetBlock(width, stride, downsample=stride != 1 or channels != width,
                                 name=f"stage{stage + 1}_block{block + 1}")(x)
                channels = width
    return keras.Model(inputs, x, name=name)


def _register(depth: int):
    def factory(input_shape=(112, 112, 3), remat: bool = False) -> keras.Model:
        return build_iresnet(input_shape, DEPTHS[depth], remat=remat, name=f"iresnet{depth}")

    factory.__name__ = f"iresnet{depth}"
    factory.__doc__ = f"IResNet-{depth} (blocks {DEPTHS[depth]}), insightface architecture."
    return BACKBONES.register(f"iresnet{depth}")(factory)


iresnet18, iresnet34, iresnet50, iresnet100, iresnet200 = (_register(d) for d in DEPTHS)


@BACKBONES.register("iresnet")
def iresnet(input_shape=(112, 112, 3), layers=(3, 4, 14, 3), widths=STAGE_WIDTHS,
            stem_width: int = 64, remat: bool = False) -> keras.Model:
    """IResNet of any depth/width (``layers`` blocks per stage), e.g. for small ablations."""
    return build_iresnet(input_shape, tuple(layers), tuple(widths), stem_width, remat)
