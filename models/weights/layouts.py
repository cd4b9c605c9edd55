"""Where each unit of insightface's models goes in ours: the Keras layers in forward order.

Our layers are named after insightface's modules, so the order is written out
by name rather than read from Keras's layer list (a functional model lists
layers by graph depth, which puts a block's shortcut conv among its main path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import keras


@dataclass
class Slot:
    kind: str                       # conv | bn | prelu | dense
    layer: keras.layers.Layer
    label: str                      # where it is here, for messages
    flatten_from: tuple | None = None  # a dense layer after Flatten: the (h, w, c) it flattens


def _slots(model, names, prefix: str = "") -> list:
    slots = []
    for name in names:
        layer = model.get_layer(name)
        slots.append(Slot(_kind(layer), layer, f"{prefix}{name}"))
    return slots


def _kind(layer) -> str:
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        return "conv"
    if isinstance(layer, keras.layers.BatchNormalization):
        return "bn"
    if isinstance(layer, keras.layers.PReLU):
        return "prelu"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    raise ValueError(f"layer {layer.name} ({type(layer).__name__}) holds no importable weights")


def _numbered(model, pattern: str):
    """Layers whose name matches ``pattern`` (groups: numbers), sorted by those numbers."""
    found = []
    for layer in model.layers:
        match = re.fullmatch(pattern, layer.name)
        if match:
            found.append((tuple(int(g) for g in match.groups()), layer))
    return [layer for _, layer in sorted(found, key=lambda item: item[0])]


def iresnet_slots(backbone) -> list:
    """Stem conv-BN-PReLU, then per block BN, conv, BN, PReLU, conv, BN [, shortcut conv, BN]."""
    slots = _slots(backbone, ("stem_conv", "stem_bn", "stem_prelu"))
    for block in _numbered(backbone, r"stage(\d+)_block(\d+)"):
        names = ["bn1", "conv1", "bn2", "prelu", "conv2", "bn3"]
        if any(layer.name == "downsample_conv" for layer in block.layers):
            names += ["downsample_conv", "downsample_bn"]
        slots += _slots(block, names, f"{block.name}/")
    return slots


def mobilefacenet_slots(backbone) -> list:
    """insightface's order: stem, stem_dw or stage 1 blocks, then each stage's down block and blocks."""
    convs = [layer.name[:-len("_conv")] for layer in backbone.layers
             if layer.name.endswith("_conv") and not layer.name.endswith("_pad")]
    present = set(convs)

    def unit(name, linear=False):
        return [f"{name}_conv", f"{name}_bn"] + ([] if linear else [f"{name}_prelu"])

    def depthwise(name):
        return unit(f"{name}_expand") + unit(f"{name}_dw") + unit(f"{name}_project", linear=True)

    def blocks(stage):
        numbers = sorted(int(m.group(1)) for c in present
                         if (m := re.fullmatch(rf"stage{stage}_block(\d+)_expand", c)))
        return [n for number in numbers for n in depthwise(f"stage{stage}_block{number}")]

    names = unit("stem") + (unit("stem_dw") if "stem_dw" in present else blocks(1))
    for stage in (2, 3, 4):
        names += depthwise(f"stage{stage}_down") + blocks(stage)
    names += unit("conv_sep")
    return _slots(backbone, names)


def neck_slots(neck) -> list | None:
    """The ``e`` neck (BN, dense, BN) or the ``gdc`` neck (depthwise conv, BN, dense, BN); else None."""
    if neck is None:
        return None
    if neck.name.startswith("e_neck"):
        slots = _slots(neck, ("bn", "fc", "features"), "neck/")
    elif neck.name.startswith("gdc_neck"):
        slots = _slots(neck, ("gdc_conv", "gdc_bn", "fc", "features"), "neck/")
    else:
        return None
    flatten = neck.get_layer("flatten")
    shape = tuple(int(d) for d in flatten.input.shape[1:])
    if len(shape) == 3:
        for slot in slots:
            if slot.kind == "dense":
                slot.flatten_from = shape
    return slots


FAMILIES = {"iresnet": iresnet_slots, "mobilefacenet": mobilefacenet_slots}
