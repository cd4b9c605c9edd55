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
    apply, batch_norm, check_input_shape, minimum_input_size, padded_conv, prelu, remat_scope)
from models.backbones.iresnet_spec import DEPTHS, MINIMUM_INPUT, STAGE_WIDTHS
from models.submodel import submodel
from trainer.registry import BACKBONES



def iresnet_block(input_shape, filters: int, stride: int = 1, downsample: bool = False,
                  dtype="float32", name: str = "block") -> keras.Model:
    """insightface ``IBasicBlock`` as a functional model; the stride sits on the second 3x3 conv.

    ``downsample`` adds the projection shortcut (1x1 conv, stride, + BN) used
    whenever the width or resolution changes; otherwise the shortcut is the input.
    """

    def graph(inputs):
        x = batch_norm("bn1")(inputs)
        x = apply(padded_conv(filters, 3, 1, name="conv1"), x)
        x = prelu("prelu")(batch_norm("bn2")(x))
        x = batch_norm("bn3")(apply(padded_conv(filters, 3, stride, name="conv2"), x))
        shortcut = inputs
        if downsample:
            shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                           name="downsample_conv")(inputs)
            shortcut = batch_norm("downsample_bn")(shortcut)
        return keras.layers.Add(name="add")([x, shortcut])  # no activation after the add

    return submodel(graph, input_shape, dtype, name)


def build_iresnet(input_shape=(112, 112, 3), layers=(3, 4, 14, 3), widths=STAGE_WIDTHS,
                  stem_width: int = 64, remat: bool = False, name: str = "iresnet",
                  weights=None, freeze_stages: int = 0) -> keras.Model:
    """IResNet with ``layers[i]`` blocks in stage ``i``; output (B, H/16, W/16, widths[-1]).

    ``weights``: an insightface state dict (.pth), ONNX file or our own
    ``embedding.keras`` (``models.weights``); ``freeze_stages``: the stem and
    that many first stages are not trained.
    """
    check_input_shape(input_shape, name, minimum=MINIMUM_INPUT)
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
                x = iresnet_block(x.shape[1:], width, stride,
                                  downsample=stride != 1 or channels != width, dtype=x.dtype,
                                  name=f"stage{stage + 1}_block{block + 1}")(x)
                channels = width
    from models.weights import initialise_backbone

    return initialise_backbone(keras.Model(inputs, x, name=name), weights, freeze_stages, "iresnet")


def _register(depth: int):
    def factory(input_shape=(112, 112, 3), remat: bool = False, weights=None,
                freeze_stages: int = 0) -> keras.Model:
        return build_iresnet(input_shape, DEPTHS[depth], remat=remat, name=f"iresnet{depth}",
                             weights=weights, freeze_stages=freeze_stages)

    factory.minimum_input_size = lambda **_: MINIMUM_INPUT
    factory.__name__ = f"iresnet{depth}"
    factory.__doc__ = f"IResNet-{depth} (blocks {DEPTHS[depth]}), insightface architecture."
    return BACKBONES.register(f"iresnet{depth}")(factory)


iresnet18, iresnet34, iresnet50, iresnet100, iresnet200 = (_register(d) for d in DEPTHS)


@BACKBONES.register("iresnet")
@minimum_input_size(lambda **_: MINIMUM_INPUT)
def iresnet(input_shape=(112, 112, 3), layers=(3, 4, 14, 3), widths=STAGE_WIDTHS,
            stem_width: int = 64, remat: bool = False, weights=None,
            freeze_stages: int = 0) -> keras.Model:
    """IResNet of any depth/width (``layers`` blocks per stage), e.g. for small ablations."""
    return build_iresnet(input_shape, tuple(layers), tuple(widths), stem_width, remat,
                         weights=weights, freeze_stages=freeze_stages)
