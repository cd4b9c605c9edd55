"""Start a backbone (and its neck) from released or earlier weights: ``backbone.weights=<file>``.

    python -m trainer backbone=iresnet50 neck=e backbone.weights=ms1mv3_r50.pth data.image_size=112
    python -m trainer backbone=iresnet50 neck=e backbone.weights=w600k_r50.onnx data.image_size=112
    python -m trainer backbone=iresnet50 neck=e backbone.weights=runs/a/export/embedding.keras \\
        backbone.freeze_stages=2

Files: insightface's PyTorch state dicts (``.pth``, read with
``torch.load(weights_only=True)``, torch from the ``[torch]`` extra) and ONNX
files (initializers read with the ``onnx`` package) for IResNet 18-200 and
MobileFaceNet, and our own exports (``embedding.keras``: the backbone and neck
of the same architecture). Layouts are converted (conv OIHW → HWIO, depthwise
``(C,1,k,k)`` → ``(k,k,C,1)``, PReLU ``(C,)`` → ``(1,1,C)``, dense ``(out,in)``
→ ``(in,out)`` with its rows permuted from PyTorch's NCHW flatten order to
Keras's NHWC one), BatchNorm epsilons are honoured (folded into the variance),
and BatchNorms that an ONNX exporter folded into a conv come back as identity
BatchNorms carrying the bias.

Two steps, because the backbone and the neck are built apart:
``load_backbone_weights`` runs in the backbone factory (the trunk), and
``initialise_embedding_model`` after the neck is built (the neck's share:
IResNet's ``e`` neck BN-FC-BN, MobileFaceNet's ``gdc``). ``preprocess_for_weights``
sets the input convention the weights were trained with (insightface: RGB,
(x - 127.5) / 127.5) and warns in one line when the preprocess config disagrees.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from models.weights import layouts
from models.weights.sources import Convention, Source, find_layer, plain, read
from trainer.registry import ConfigError

__all__ = ["Convention", "initialise_backbone", "load_backbone_weights", "initialise_embedding_model", "preprocess_for_weights",
           "freeze_stages", "imports_weights"]

# One parsed file, shared by the steps of one model build (a large state dict is read once).
_CACHE: dict = {}
STAGE_PREFIXES = {"iresnet": ("stem_",), "mobilefacenet": ("stem_",)}


def imports_weights(weights) -> bool:
    """True for a file this module reads (keras.applications' own .weights.h5 / imagenet are not)."""
    if not weights:
        return False
    return str(weights).lower().endswith((".pth", ".pt", ".bin", ".ckpt", ".onnx", ".keras"))


def source(weights) -> Source:
    path = os.path.abspath(os.path.expanduser(str(weights)))
    try:
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = (path, None, None)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = read(path)
    return _CACHE[key]


def forget() -> None:
    _CACHE.clear()


# -- the trunk ----------------------------------------------------------------------------------

def initialise_backbone(backbone, weights, freeze_stages_count: int, family: str):
    """What a backbone factory does with ``weights`` and ``freeze_stages``; returns the backbone."""
    if weights:
        if not imports_weights(weights):
            raise ConfigError(f"backbone.weights={weights}: give an insightface state dict (.pth), its ONNX "
                              "file (.onnx) or an exported model (runs/<name>/export/embedding.keras)")
        load_backbone_weights(backbone, weights, family)
    freeze_stages(backbone, freeze_stages_count, family)
    return backbone


def load_backbone_weights(backbone, weights, family: str) -> None:
    """Set ``backbone``'s weights from ``weights`` (a file ``imports_weights`` accepts)."""
    parsed = source(weights)
    if parsed.kind == "keras":
        copy_from_export(parsed, backbone, "backbone")
        return
    slots = layouts.FAMILIES[family](backbone)
    count = len(slots)
    assign(slots, parsed.units[:count], parsed.path, what=f"backbone '{backbone.name}'",
           hint=_depth_hint(parsed, family, slots))


def _depth_hint(parsed: Source, family: str, slots) -> str:
    """For IResNets: how many residual blocks the file has against the model (one PReLU each + stem)."""
    if family != "iresnet":
        return ""
    from models.backbones.iresnet_spec import DEPTHS

    in_file = sum(1 for unit in parsed.units if unit.kind == "prelu") - 1
    here = sum(1 for slot in slots if slot.kind == "prelu") - 1
    if in_file == here:
        return ""
    depth = next((d for d, layers in DEPTHS.items() if sum(layers) == in_file), None)
    return (f" (the file has {in_file} residual blocks, this backbone {here}"
            + (f": the file is an iresnet{depth}, use backbone=iresnet{depth})" if depth else ")"))


# -- the neck -----------------------------------------------------------------------------------

def initialise_embedding_model(model, backbone_node) -> None:
    """After the neck is built: load its share of ``backbone.weights`` (or warn why it stays random)."""
    weights = backbone_node.get("weights") if backbone_node is not None else None
    if not imports_weights(weights):
        return
    try:
        parsed = source(weights)
        neck = _neck_of(model)
        if parsed.kind == "keras":
            if neck is not None:
                copy_from_export(parsed, neck, "neck", required=False)
            return
        backbone = find_layer(model, str(backbone_node.get("name")))
        family = _family(str(backbone_node.get("name")))
        used = len(layouts.FAMILIES[family](backbone)) if backbone is not None and family else 0
        rest = parsed.units[used:]
        slots = layouts.neck_slots(neck)
        if slots is None:
            _warn(f"backbone.weights={weights}: neck '{getattr(neck, 'name', None)}' has no counterpart in the "
                  f"file (insightface's IResNet pairs with neck=e, MobileFaceNet with neck=gdc); it starts random")
            return
        try:
            assign(slots, rest, parsed.path, what=f"neck '{neck.name}'")
        except ConfigError as error:  # another embedding size or image size: train the neck afresh
            _warn(f"{error}; the neck starts random, the backbone is loaded")
    finally:
        forget()


def _neck_of(model):
    for name in ("e_neck", "gdc_neck", "gap_neck", "vit_head_neck"):
        layer = find_layer(model, name)
        if layer is not None:
            return layer
    inner = [layer for layer in getattr(model, "layers", []) if hasattr(layer, "layers")]
    return inner[-1] if inner else None


def _family(name: str) -> str | None:
    if name.startswith("iresnet"):
        return "iresnet"
    if name.startswith("mobilefacenet"):
        return "mobilefacenet"
    return None


# -- assignment ---------------------------------------------------------------------------------

def assign(slots, units, path: str, what: str, hint: str = "") -> None:
    """Convert every unit to its slot's layout, check all shapes, then set them (all or nothing)."""
    if len(units) < len(slots):
        raise ConfigError(f"backbone.weights={path} holds {len(units)} layers for {what}, which needs "
                          f"{len(slots)}{hint}")
    values, pending_bias = [], None
    for slot, unit in zip(slots, units):
        if slot.kind != unit.kind:
            raise ConfigError(f"backbone.weights={path}: {unit.name} is a {unit.kind} where {what} has the "
                              f"{slot.kind} {slot.label}: not the same architecture{hint}")
        arrays, pending_bias = _convert(slot, unit, pending_bias)
        expected = [tuple(v.shape) for v in slot.layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if expected != got:
            raise ConfigError(f"backbone.weights={path}: {unit.name} has shapes {got} where {what}'s "
                              f"{slot.label} has {expected}{hint}")
        values.append((slot, arrays, unit))
    for slot, arrays, unit in values:
        slot.layer.set_weights([a.astype(np.float32) for a in arrays])


def _convert(slot, unit, pending_bias):
    """Arrays in the order of ``slot.layer.weights``, and a bias to fold into the next BatchNorm."""
    layer, a = slot.layer, unit.arrays
    if unit.kind == "conv":
        weight = np.asarray(a["weight"])
        import keras

        if isinstance(layer, keras.layers.DepthwiseConv2D):  # (C, 1, kh, kw) → (kh, kw, C, 1)
            kernel = weight.transpose(2, 3, 0, 1)
        else:                                                 # (O, I/g, kh, kw) → (kh, kw, I/g, O)
            kernel = weight.transpose(2, 3, 1, 0)
        return _with_bias(layer, kernel, a.get("bias"))
    if unit.kind == "dense":
        weight = np.asarray(a["weight"])                      # (out, in)
        if slot.flatten_from is not None and weight.shape[1] == int(np.prod(slot.flatten_from)):
            h, w, c = slot.flatten_from                       # rows: PyTorch (c, h, w) → Keras (h, w, c)
            weight = weight.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
        return _with_bias(layer, weight.T, a.get("bias"))
    if unit.kind == "prelu":
        slope = np.reshape(a["slope"], -1)
        return [slope.reshape(tuple(layer.weights[0].shape)) if slope.size == np.prod(layer.weights[0].shape)
                else slope], None
    if unit.kind == "bn":
        mean = np.asarray(a["mean"], np.float64)
        if pending_bias is not None:                          # BN(x + b) = BN'(x), BN' with mean - b
            mean = mean - np.reshape(pending_bias, -1)
        variance = np.asarray(a["var"], np.float64) + (unit.epsilon - layer.epsilon)
        if np.any(variance < 0):  # a smaller epsilon than ours cannot be folded: use the file's
            layer.epsilon = unit.epsilon
            variance = np.asarray(a["var"], np.float64)
        return [np.asarray(a["gamma"]), np.asarray(a["beta"]), mean, variance], None
    raise ValueError(unit.kind)


def _with_bias(layer, kernel, bias):
    """[kernel(, bias)] for the layer; a bias it has no place for moves into the next BatchNorm."""
    if layer.use_bias:
        return [kernel, np.zeros(kernel.shape[-1]) if bias is None else np.reshape(bias, -1)], None
    return [kernel], bias


def copy_from_export(parsed: Source, target, part: str, required: bool = True) -> None:
    """Copy the same-named backbone (or neck) of an exported model into ``target``."""
    found = find_layer(parsed.model, target.name)
    if found is None:
        if not required:
            _warn(f"backbone.weights={parsed.path} has no '{target.name}'; the {part} starts random")
            return
        embedding = find_layer(parsed.model, "embedding")
        inner = [layer.name for layer in embedding.layers if hasattr(layer, "layers")] if embedding is not None else []
        raise ConfigError(f"backbone.weights={parsed.path} holds no {part} '{target.name}' "
                          f"(its parts: {', '.join(inner) or 'unknown'}); pick the same backbone")
    source_weights = found.get_weights()
    shapes = [tuple(w.shape) for w in source_weights], [tuple(w.shape) for w in target.weights]
    if shapes[0] != shapes[1]:
        message = (f"backbone.weights={parsed.path}: its {part} '{target.name}' has other shapes than this "
                   "one (another width, image size or embedding size)")
        if required:
            raise ConfigError(message)
        _warn(f"{message}; the {part} starts random")
        return
    target.set_weights(source_weights)


# -- the input convention -----------------------------------------------------------------------

def preprocess_for_weights(backbone_node, preprocess_node):
    """The preprocess config the weights expect: ``preprocess_node`` itself when it agrees.

    When it disagrees, the weights' convention is used (a network fed other
    pixels than it was trained on starts far from where it was) and one
    ``warning:`` line says so.
    """
    weights = backbone_node.get("weights") if backbone_node is not None else None
    if not imports_weights(weights) or preprocess_node is None:
        return preprocess_node
    convention = source(weights).convention
    if convention is None:
        return preprocess_node
    from trainer.registry import to_plain

    node = to_plain(preprocess_node)
    if node.get("name") != "standard":
        _warn(f"backbone.weights={weights} expects {convention.describe()}; preprocess={node.get('name')} "
              "cannot be checked against it")
        return preprocess_node
    current = Convention(str(node.get("channel_order", "rgb")).lower(), _triple(node.get("mean", 127.5)),
                         _triple(node.get("std", 127.5)))
    if (current.channel_order == convention.channel_order and np.allclose(current.mean, convention.mean)
            and np.allclose(current.std, convention.std)):
        return preprocess_node
    _warn(f"backbone.weights={weights} expects {convention.describe()} but the preprocess config says "
          f"{current.describe()}; using the weights' convention (set preprocess.channel_order="
          f"{convention.channel_order} preprocess.mean={plain(convention.mean)} "
          f"preprocess.std={plain(convention.std)} to silence this)")
    node.update(channel_order=convention.channel_order, mean=plain(convention.mean), std=plain(convention.std))
    return node


def _triple(value) -> tuple:
    values = [float(v) for v in value] if isinstance(value, (list, tuple)) or hasattr(value, "__len__") \
        else [float(value)]
    return tuple(values * 3 if len(values) == 1 else values)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


# -- freezing -----------------------------------------------------------------------------------

def freeze_stages(backbone, stages: int, family: str) -> None:
    """Freeze the stem and the first ``stages`` stages (0: nothing); frozen BatchNorms use their statistics."""
    stages = int(stages)
    if not 0 <= stages <= 4:
        raise ConfigError(f"backbone.freeze_stages={stages}: give 0 (train everything) to 4 (all four stages)")
    if stages == 0:
        return
    prefixes = (*STAGE_PREFIXES[family], *(f"stage{s}_" for s in range(1, stages + 1)))
    for layer in backbone.layers:
        if layer.name.startswith(prefixes):
            layer.trainable = False
