"""Reading weight files into one neutral form: the parametrised layers in forward order.

A *unit* is one conv, BatchNorm, PReLU or dense layer with its arrays in
PyTorch's layout (conv ``OIHW``, dense ``(out, in)``, PReLU ``(C,)``). Both of
insightface's formats become the same list:

* a PyTorch state dict (``.pth``/``.pt``): its modules in registration order,
  which for insightface's IResNet and MobileFaceNet is the forward order;
* an ONNX file: the graph's nodes (topologically sorted by the format). PyTorch's
  ONNX exporters fold each BatchNorm into the conv or dense before it (the
  weights are rescaled and a bias appears; a zero bias may be dropped), so a
  conv/dense whose output feeds no BatchNormalization node is followed here by
  an *identity* BatchNorm. Every conv and dense layer of the supported
  families is followed by a BatchNorm, so nothing is lost.

Each source also says which input its model expects (``Convention``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from trainer.errors import first_line
from trainer.registry import ConfigError

TORCH_HINT = "reading a PyTorch state dict needs torch: pip install 'facetrain[torch]'"
ONNX_HINT = "reading an ONNX file needs the onnx package: pip install 'facetrain[export]'"
PYTORCH_BN_EPSILON = 1e-5  # insightface's IResNet and MobileFaceNet; a state dict does not store it


@dataclass
class Unit:
    kind: str                     # conv | bn | prelu | dense
    arrays: dict                  # conv/dense: weight[, bias]; bn: gamma, beta, mean, var; prelu: slope
    name: str = ""                # where it came from in the file (module or node name)
    epsilon: float = PYTORCH_BN_EPSILON
    folded: bool = False          # an identity BatchNorm standing for one the exporter folded away


@dataclass(frozen=True)
class Convention:
    """What the weights' model expects of its input: (x[channel_order] - mean) / std."""

    channel_order: str = "rgb"
    mean: tuple = (127.5, 127.5, 127.5)
    std: tuple = (127.5, 127.5, 127.5)

    def describe(self) -> str:
        return f"{self.channel_order.upper()} (x - {plain(self.mean)}) / {plain(self.std)}"


def plain(values: tuple):
    """One number when every channel has it, else the list (as a config writes it)."""
    return values[0] if len(set(values)) == 1 else list(values)


# insightface arcface_torch trains on RGB (mxnet's decoder; its inference script converts BGR to
# RGB) normalised by (x / 255 - 0.5) / 0.5 = (x - 127.5) / 127.5.
INSIGHTFACE = Convention()


@dataclass
class Source:
    """A parsed weight file: units (PyTorch / ONNX) or a Keras model (our own export)."""

    path: str
    kind: str                     # pytorch | onnx | keras
    units: list = field(default_factory=list)
    convention: Convention | None = INSIGHTFACE
    model: object = None          # keras: the loaded embedding model


def read(path: str) -> Source:
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise ConfigError(f"backbone.weights={path} does not exist; give a PyTorch state dict (.pth), "
                          "an ONNX file (.onnx) or an exported model (runs/<name>/export/embedding.keras)")
    lower = path.lower()
    if lower.endswith(".onnx"):
        return read_onnx(path)
    if lower.endswith(".keras"):
        return read_keras(path)
    if lower.endswith((".pth", ".pt", ".bin", ".ckpt")):
        return read_pytorch(path)
    raise ConfigError(f"backbone.weights={path}: unknown kind of file; give a PyTorch state dict (.pth/.pt), "
                      "an ONNX file (.onnx) or an exported model (.keras)")


# -- PyTorch ------------------------------------------------------------------------------------

def read_pytorch(path: str) -> Source:
    try:
        import torch
    except ImportError:
        raise ConfigError(f"backbone.weights={path}: {TORCH_HINT} (or give its ONNX file)") from None
    try:
        # weights_only: a state dict is tensors in containers; arbitrary pickled code is refused.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigError(f"backbone.weights={path} is not a PyTorch state dict torch can load "
                          f"safely: {first_line(error)}") from None
    state = _state_dict_of(loaded, path)
    arrays = {_strip_wrappers(k): v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}
    return Source(path, "pytorch", state_dict_units(arrays), INSIGHTFACE)


def _state_dict_of(loaded, path: str) -> dict:
    """The tensors of a plain state dict or of a checkpoint that holds one."""
    if isinstance(loaded, dict):
        for key in ("state_dict", "model", "backbone", "model_state_dict"):
            if isinstance(loaded.get(key), dict):
                return loaded[key]
        if any(hasattr(v, "detach") for v in loaded.values()):
            return loaded
    raise ConfigError(f"backbone.weights={path} holds no state dict (a dict of tensors)")


def _strip_wrappers(name: str) -> str:
    for prefix in ("module.", "backbone.", "_orig_mod."):  # DataParallel, wrappers, torch.compile
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name


def state_dict_units(arrays: dict) -> list:
    """Modules of a state dict, in order, as units (running statistics mark a BatchNorm)."""
    modules: dict[str, dict] = {}
    for key, value in arrays.items():
        module, _, parameter = key.rpartition(".")
        modules.setdefault(module, {})[parameter] = value
    units = []
    for module, params in modules.items():
        if "running_mean" in params and "weight" in params and "bias" in params:  # affine BatchNorm
            units.append(Unit("bn", {"gamma": params["weight"], "beta": params["bias"],
                                     "mean": params["running_mean"], "var": params["running_var"]},
                              module))
        elif "weight" in params and params["weight"].ndim == 4:
            units.append(Unit("conv", _with_bias(params), module))
        elif "weight" in params and params["weight"].ndim == 2:
            units.append(Unit("dense", _with_bias(params), module))
        elif "weight" in params and params["weight"].ndim == 1 and len(params) == 1:
            units.append(Unit("prelu", {"slope": params["weight"]}, module))
        else:
            raise ConfigError(f"state dict module {module!r} ({sorted(params)}) is not a conv, BatchNorm, "
                              "PReLU or linear layer: this is not an insightface IResNet/MobileFaceNet")
    return units


def _with_bias(params: dict) -> dict:
    arrays = {"weight": params["weight"]}
    if params.get("bias") is not None:
        arrays["bias"] = params["bias"]
    return arrays


# -- ONNX ---------------------------------------------------------------------------------------

def read_onnx(path: str) -> Source:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ConfigError(f"backbone.weights={path}: {ONNX_HINT}") from None
    try:
        graph = onnx.load(path).graph
    except Exception as error:
        raise ConfigError(f"backbone.weights={path} is not an ONNX model: {type(error).__name__}") from None
    try:
        return _onnx_source(path, graph, onnx, numpy_helper)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:  # a malformed graph
        raise ConfigError(f"backbone.weights={path}: its weights cannot be read from the ONNX graph "
                          f"({type(error).__name__}: {first_line(error)})") from None


def constant_value(node, onnx, numpy_helper) -> np.ndarray | None:
    """A Constant node's value, whichever of its attributes holds it (``value``, ``value_float``, ...)."""
    for attribute in node.attribute:
        if attribute.name in ("sparse_value", "value_string", "value_strings"):
            continue  # not weights
        value = onnx.helper.get_attribute_value(attribute)
        return numpy_helper.to_array(value) if attribute.name == "value" else np.asarray(value)
    return None


def _onnx_source(path: str, graph, onnx, numpy_helper) -> Source:
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # weights stored as Constant nodes, and exporters' Identity aliases
        if node.op_type == "Constant" and node.attribute:
            value = constant_value(node, onnx, numpy_helper)
            if value is not None:
                constants[node.output[0]] = value
        elif node.op_type == "Identity" and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    units = []
    for node in graph.node:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        inputs = [constants.get(name) for name in node.input]
        if node.op_type == "Conv" and inputs[1] is not None:
            arrays = {"weight": inputs[1]}
            if len(inputs) > 2 and inputs[2] is not None:
                arrays["bias"] = inputs[2]
            units += _with_batch_norm(Unit("conv", arrays, node.name), node, consumers)
        elif node.op_type == "BatchNormalization":
            units.append(Unit("bn", {"gamma": inputs[1], "beta": inputs[2], "mean": inputs[3], "var": inputs[4]},
                              node.name, float(attributes.get("epsilon", 1e-5))))
        elif node.op_type == "PRelu" and inputs[1] is not None:
            units.append(Unit("prelu", {"slope": np.reshape(inputs[1], -1)}, node.name))
        elif node.op_type == "Gemm" and inputs[1] is not None:
            weight = inputs[1] if attributes.get("transB", 0) else inputs[1].T  # → (out, in)
            arrays = {"weight": weight * float(attributes.get("alpha", 1.0))}
            if len(inputs) > 2 and inputs[2] is not None:
                arrays["bias"] = np.reshape(inputs[2], -1) * float(attributes.get("beta", 1.0))
            units += _with_batch_norm(Unit("dense", arrays, node.name), node, consumers)
        elif node.op_type == "MatMul" and inputs[1] is not None and inputs[1].ndim == 2:
            arrays = {"weight": inputs[1].T}
            add = _only_consumer(node, consumers, "Add")
            if add is not None:  # MatMul + Add(bias) is a dense layer too
                bias = next((constants.get(n) for n in add.input if constants.get(n) is not None), None)
                if bias is not None:
                    arrays["bias"] = np.reshape(bias, -1)
                    node = add
            units += _with_batch_norm(Unit("dense", arrays, node.name), node, consumers)
    return Source(path, "onnx", units, _onnx_convention(graph, constants))


def _only_consumer(node, consumers, op_type: str):
    users = consumers.get(node.output[0], [])
    return users[0] if len(users) == 1 and users[0].op_type == op_type else None


def _with_batch_norm(unit: Unit, node, consumers) -> list:
    """The unit, then an identity BatchNorm when the exporter folded the real one into it."""
    if _only_consumer(node, consumers, "BatchNormalization") is not None:
        return [unit]
    channels = unit.arrays["weight"].shape[0]
    identity = Unit("bn", {"gamma": np.ones(channels, np.float32), "beta": np.zeros(channels, np.float32),
                           "mean": np.zeros(channels, np.float32),
                           "var": np.full(channels, 1.0 - PYTORCH_BN_EPSILON, np.float32)},
                    f"{unit.name} (folded BatchNorm)", PYTORCH_BN_EPSILON, folded=True)
    return [unit, identity]


def _onnx_convention(graph, constants) -> Convention:
    """insightface's convention, unless the graph normalises its own input (Sub / Mul / Div first).

    Older insightface ONNX files subtract the mean and scale inside the graph; then
    the file's input is raw pixels, and the preprocessing here must do what those
    nodes did (they are not part of the imported weights).
    """
    if not graph.input:
        return INSIGHTFACE
    current, mean, scale = graph.input[0].name, 0.0, 1.0
    for node in graph.node:
        if current not in node.input or node.op_type not in ("Sub", "Mul", "Div", "Transpose", "Cast"):
            if current in node.input:
                break
            continue
        other = next((constants[n] for n in node.input if n != current and n in constants), None)
        if node.op_type == "Sub" and other is not None and np.size(other) in (1, 3):
            mean = mean + np.reshape(other, -1) / scale
        elif node.op_type == "Mul" and other is not None and np.size(other) in (1, 3):
            scale = scale * np.reshape(other, -1)
        elif node.op_type == "Div" and other is not None and np.size(other) in (1, 3):
            scale = scale / np.reshape(other, -1)
        elif node.op_type in ("Sub", "Mul", "Div"):
            break
        current = node.output[0]
    if np.all(np.asarray(scale) == 1.0) and np.all(np.asarray(mean) == 0.0):
        return INSIGHTFACE
    triple = lambda v: tuple(float(x) for x in np.broadcast_to(np.asarray(v, np.float64), (3,)))  # noqa: E731
    return Convention("rgb", triple(mean), triple(1.0 / np.asarray(scale, np.float64)))


# -- our own exports ----------------------------------------------------------------------------

def read_keras(path: str) -> Source:
    from trainer.export.model_files import load_embedding_model

    model = load_embedding_model(path, "backbone.weights")
    return Source(path, "keras", [], keras_convention(model), model)


def keras_convention(model) -> Convention | None:
    """The input convention of an exported model: its ``standard_preprocess`` layer's settings."""
    preprocess = find_layer(model, "standard_preprocess")
    if preprocess is None:
        return None
    config = preprocess.get_layer("normalize").get_config()
    order = "bgr" if any(layer.name == "bgr" for layer in preprocess.layers) else "rgb"
    mean = tuple(float(m) for m in np.broadcast_to(np.asarray(config["mean"], np.float64), (3,)))
    std = tuple(float(np.sqrt(v)) for v in np.broadcast_to(np.asarray(config["variance"], np.float64), (3,)))
    return Convention(order, mean, std)


def find_layer(model, name: str):
    """The first layer called ``name`` anywhere in a (nested) model, or None."""
    for layer in getattr(model, "layers", []):
        if layer.name == name:
            return layer
        found = find_layer(layer, name) if hasattr(layer, "layers") else None
        if found is not None:
            return found
    return None
