"""``tiny``: a small plain CNN for CPU demos, smoke runs and tests.

Stages of conv3x3 -> BN -> activation; the first conv of each stage has stride
2 (symmetric padding, like the IResNets), the others are residual. At the
default 48x48 input and widths 32/64/128 it costs about 16 M multiply-adds per
image, so the default job trains on two CPU cores in minutes. Widths, blocks
per stage, stem and activation are configurable.
"""

from __future__ import annotations

import keras

from models.backbones._common import activation as make_activation
from models.backbones._common import (apply, batch_norm, check_input_shape, minimum_input_size,
                                      padded_conv, remat_scope)
from trainer.registry import BACKBONES


def _conv_bn_act(x, filters, stride, act, name):
    x = apply(padded_conv(filters, 3, stride, name=f"{name}_conv"), x)
    x = batch_norm(f"{name}_bn")(x)
    return make_activation(act, f"{name}_act")(x)


def smallest_input(widths=(32, 64, 128), **_) -> int:
    """Each stage halves the resolution: at least one pixel must reach the last one."""
    return 2 ** len(widths)


@BACKBONES.register("tiny")
@minimum_input_size(smallest_input)
def tiny(input_shape=(48, 48, 3), widths=(32, 64, 128), blocks=(1, 2, 2), stem_width: int = 0,
         activation: str = "prelu", remat: bool = False) -> keras.Model:
    """Output (B, H/2^n, W/2^n, widths[-1]) for n = len(widths) stages.

    ``stem_width`` > 0 adds a stride-1 conv before the first stage (costly at
    full resolution; off by default). ``remat`` is accepted and ignored.
    """
    del remat
    if len(widths) != len(blocks) or min(blocks) < 1:
        from trainer.registry import ConfigError

        raise ConfigError(f"backbone 'tiny' needs one blocks entry (>= 1) per width, "
                          f"got widths={list(widths)} blocks={list(blocks)}")
    check_input_shape(input_shape, "tiny", minimum=smallest_input(widths))
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if stem_width:
        x = _conv_bn_act(x, stem_width, 1, activation, "stem")
    for stage, (width, count) in enumerate(zip(widths, blocks), start=1):
        x = _conv_bn_act(x, width, 2, activation, f"stage{stage}_down")
        for block in range(1, count):
            y = _conv_bn_act(x, width, 1, activation, f"stage{stage}_block{block}")
            x = keras.layers.Add(name=f"stage{stage}_block{block}_add")([x, y])
    return keras.Model(inputs, x, name="tiny")
