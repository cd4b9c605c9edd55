"""MobileFaceNet (Chen et al., "MobileFaceNets", CCBR 2018), insightface ``arcface_torch`` variant.

Depthwise-separable inverted-residual blocks (1, 4, 6, 2 per stage) on a
2x-wide (``scale=2``) stem, a 1x1 conv to 512, then the ``gdc`` neck (global
depthwise conv) gives the embedding: about 0.45 G multiply-adds at 112x112.
Backbone + ``gdc`` neck reproduce the reference count (2,059,520 weights).
"""

from __future__ import annotations

import keras

from models.backbones._common import (apply, batch_norm, check_input_shape, minimum_input_size,
                                      padded_conv, prelu)
from trainer.registry import BACKBONES


def _conv(x, filters, kernel, stride, groups, name, linear=False):
    """insightface ``ConvBlock`` (conv -> BN -> PReLU) or ``LinearBlock`` (conv -> BN)."""
    channels = x.shape[-1]
    depthwise = groups == channels == filters and groups > 1
    x = apply(padded_conv(filters, kernel, stride, groups=1 if depthwise else groups,
                          depthwise=depthwise, name=f"{name}_conv"), x)
    x = batch_norm(f"{name}_bn")(x)
    return x if linear else prelu(f"{name}_prelu")(x)


def _depthwise_block(x, filters, stride, expansion, name, residual=False):
    """insightface ``DepthWise``: 1x1 expand -> 3x3 depthwise (stride) -> 1x1 linear project."""
    y = _conv(x, expansion, 1, 1, 1, f"{name}_expand")
    y = _conv(y, expansion, 3, stride, expansion, f"{name}_dw")
    y = _conv(y, filters, 1, 1, 1, f"{name}_project", linear=True)
    return keras.layers.Add(name=f"{name}_add")([x, y]) if residual else y


MINIMUM_INPUT = 16  # four stride-2 stages


@BACKBONES.register("mobilefacenet")
@minimum_input_size(lambda **_: MINIMUM_INPUT)
def mobilefacenet(input_shape=(112, 112, 3), blocks=(1, 4, 6, 2), scale: int = 2,
                  remat: bool = False, weights=None, freeze_stages: int = 0) -> keras.Model:
    """MobileFaceNet trunk; output (B, H/16, W/16, 512). Pair it with ``neck=gdc``.

    ``remat`` is accepted for a uniform signature and ignored: the model is small.
    ``weights``: an insightface state dict (.pth), ONNX file or our own
    ``embedding.keras`` (``models.weights``); ``freeze_stages``: the stem and
    that many first stages are not trained.
    """
    del remat
    check_input_shape(input_shape, "mobilefacenet", minimum=MINIMUM_INPUT)
    inputs = keras.Input(input_shape, name="image")
    width = 64 * scale
    x = _conv(inputs, width, 3, 2, 1, "stem")
    if blocks[0] == 1:
        x = _conv(x, width, 3, 1, 64, "stem_dw")  # grouped 3x3 (64 groups), as insightface
    else:
        for i in range(blocks[0]):
            x = _depthwise_block(x, width, 1, 128, f"stage1_block{i + 1}", residual=True)
    stages = (  # (output width, expansion of the downsampling block, blocks, expansion inside)
        (width, 128, blocks[1], 128),
        (2 * width, 256, blocks[2], 256),
        (2 * width, 512, blocks[3], 256),
    )
    for stage, (filters, down_expansion, count, expansion) in enumerate(stages, start=2):
        x = _depthwise_block(x, filters, 2, down_expansion, f"stage{stage}_down")
        for i in range(count):
            x = _depthwise_block(x, filters, 1, expansion, f"stage{stage}_block{i + 1}",
                                 residual=True)
    x = _conv(x, 512, 1, 1, 1, "conv_sep")
    from models.weights import initialise_backbone

    return initialise_backbone(keras.Model(inputs, x, name="mobilefacenet"), weights, freeze_stages,
                               "mobilefacenet")
