"""FLOPs per image of a Keras model, counted from the backend's traced forward pass.

Method: trace ``model(images, training=False)`` once at a fixed batch and add
up the multiply-accumulates (MACs) of the ops that carry the arithmetic:
convolutions (depthwise and grouped too), matrix products, batched matmuls
and einsums. Element-wise work (BN, activations, the loss) is left out, as in
the papers' "multiply-adds" figures (IResNet-50 at 112x112: 6.3 G). Under
TensorFlow the traced ``tf.function`` graph is walked; under JAX the jaxpr.

Conventions (those of the reference numbers): forward FLOPs = 2 x MACs;
a training step = 3 x forward (the backward pass computes gradients for both
the inputs and the weights of every product). Under JAX the bench also asks
XLA for its own count of the compiled training step (``cost_analysis``),
which includes the element-wise work, as a cross-check.
"""

from __future__ import annotations

import math

import keras
import numpy as np

TRAINING_FACTOR = 3  # forward + backward (input grads + weight grads)


def forward_macs_per_image(model: keras.Model, input_shape, batch: int = 2) -> int:
    """MACs of one forward pass per image (``input_shape`` without the batch axis)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_macs(model, tuple(input_shape), batch) // batch
    if backend == "jax":
        return _jax_macs(model, tuple(input_shape), batch) // batch
    raise RuntimeError(f"FLOP counting is not implemented for the {backend} backend")


def flops_summary(model: keras.Model, input_shape) -> dict:
    macs = forward_macs_per_image(model, input_shape)
    return {"forward_macs_per_image": int(macs),
            "forward_flops_per_image": int(2 * macs),
            "train_flops_per_image": int(2 * TRAINING_FACTOR * macs),
            "method": f"{keras.backend.backend()} traced forward graph: conv/matmul/einsum MACs; "
                      f"train = {TRAINING_FACTOR} x forward, FLOPs = 2 x MACs"}


# -- TensorFlow: walk the graph of a traced tf.function -----------------------

def _tensorflow_macs(model, input_shape, batch) -> int:
    import tensorflow as tf

    function = tf.function(lambda images: model(images, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((batch, *input_shape), tf.float32))
    library = {f.signature.name: f for f in concrete.graph.as_graph_def().library.function}
    return _graph_def_macs(concrete.graph, library)


def _graph_def_macs(graph, library) -> int:
    total = 0
    for op in graph.get_operations():
        total += _tf_op_macs(op)
        for attr in ("f", "then_branch", "else_branch", "body"):
            try:
                name = op.get_attr(attr).name
            except (ValueError, AttributeError):
                continue
            function = graph._get_function(name) if hasattr(graph, "_get_function") else None
            if function is not None and hasattr(function, "graph"):
                total += _graph_def_macs(function.graph, library)
    return total


def _dims(tensor) -> list[int] | None:
    shape = tensor.shape
    if shape.rank is None or any(d is None for d in shape.as_list()):
        return None
    return shape.as_list()


def _tf_op_macs(op) -> int:
    kind = op.type
    if kind in ("Conv2D", "Conv3D"):
        out, kernel = _dims(op.outputs[0]), _dims(op.inputs[1])
        if out is None or kernel is None:
            return 0
        # kernel (kh, kw, c_in / groups, c_out): every output value costs kh*kw*c_in/groups MACs
        return math.prod(out) * math.prod(kernel[:-1])
    if kind == "DepthwiseConv2dNative":
        out, kernel = _dims(op.outputs[0]), _dims(op.inputs[1])
        if out is None or kernel is None:
            return 0
        return math.prod(out) * kernel[0] * kernel[1]
    if kind in ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
        a, out = _dims(op.inputs[0]), _dims(op.outputs[0])
        if a is None or out is None:
            return 0
        transposed = op.get_attr("transpose_a" if kind == "MatMul" else "adj_x")
        inner = a[-2] if transposed else a[-1]
        return math.prod(out) * inner
    if kind == "Einsum":
        return _einsum_macs(op.get_attr("equation").decode(),
                            [_dims(t) for t in op.inputs])
    return 0


def _einsum_macs(equation: str, shapes) -> int:
    """Product of the sizes of every distinct index (one MAC per index combination)."""
    if any(s is None for s in shapes) or "..." in equation:
        return 0
    inputs = equation.split("->")[0].split(",")
    sizes = {}
    for letters, shape in zip(inputs, shapes):
        for letter, size in zip(letters, shape):
            sizes[letter] = size
    return math.prod(sizes.values()) if len(inputs) > 1 else 0


# -- JAX: walk the jaxpr of the stateless forward pass --------------------------

def _jax_macs(model, input_shape, batch) -> int:
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def forward(trainable, non_trainable, images):
        outputs, _ = model.stateless_call(trainable, non_trainable, images, training=False)
        return outputs

    images = jax.ShapeDtypeStruct((batch, *input_shape), np.float32)
    closed = jax.make_jaxpr(forward)(trainable, non_trainable, images)
    return _jaxpr_macs(closed.jaxpr)


def _jaxpr_macs(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (contract_a, _), (batch_a, _) = eqn.params["dimension_numbers"]
            a = eqn.invars[0].aval.shape
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(a[d] for d in contract_a)
        elif name == "conv_general_dilated":
            out = eqn.outvars[0].aval.shape
            kernel = eqn.invars[1].aval.shape
            spec = eqn.params["dimension_numbers"].rhs_spec  # (out_ch, in_ch, *spatial) positions
            per_output = kernel[spec[1]] * math.prod(kernel[d] for d in spec[2:])
            total += math.prod(out) * per_output
        for value in eqn.params.values():
            for sub in _sub_jaxprs(value):
                total += _jaxpr_macs(sub)
    return total


def _sub_jaxprs(value):
    values = value if isinstance(value, (list, tuple)) else [value]
    for item in values:
        inner = getattr(item, "jaxpr", None)  # ClosedJaxpr -> Jaxpr
        if inner is not None and hasattr(inner, "eqns"):
            yield inner
        elif hasattr(item, "eqns"):
            yield item


def xla_step_flops(compiled) -> float | None:
    """XLA's FLOP count of a lowered or compiled JAX computation (``jax.jit(f).lower(...)``)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # not every platform implements it
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])
