"""Writers: the Keras embedding model → SavedModel, TFLite (float32, float16, int8) and ONNX.

All formats are traced from one SavedModel written with ``keras.export.ExportArchive``:
it tracks the Keras variables properly, so the TFLite converter sees every
weight (a hand-made ``tf.Module`` around a Keras 3 model converts to a TFLite
file without its weights, whose outputs are NaN).

ONNX goes through tf2onnx from a *frozen* graph. Keras's own
``model.export(format="onnx")`` (and ``tf2onnx.convert.from_function``) leave
the constants that ``Normalization`` captures (the preprocessing's mean and
variance) as extra graph inputs, so the file does not run in onnxruntime
without feeding them; freezing the concrete function first makes them constants.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

OUTPUT_NAME = "embedding"
INPUT_NAME = "image"
ONNX_OPSET = 17

FILES = {
    "savedmodel": "embedding_savedmodel",
    "tflite_float32": "embedding_float32.tflite",
    "tflite_float16": "embedding_float16.tflite",
    "tflite_int8": "embedding_int8.tflite",
    "onnx": "embedding.onnx",
}


def _image_spec(model, dtype: str):
    import keras

    height, width = (int(d) for d in model.input_shape[1:3])
    return keras.InputSpec(shape=(None, height, width, 3), dtype=dtype, name=INPUT_NAME)


def write_savedmodel(model, path: str) -> str:
    """``serving_default``: float32 pixels 0..255 → {"embedding"}; ``serving_uint8``: uint8 pixels.

    The batch dimension is free (None). TF Serving, ``tf.saved_model.load`` and
    the TFLite converter read it.
    """
    import keras
    import tensorflow as tf

    def from_float(image):
        return {OUTPUT_NAME: model(image, training=False)}

    def from_uint8(image):
        return {OUTPUT_NAME: model(tf.cast(image, tf.float32), training=False)}

    tf.get_logger().setLevel("ERROR")  # not one "Assets written to" line per export
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", from_float, input_signature=[_image_spec(model, "float32")])
    archive.add_endpoint("serving_uint8", from_uint8, input_signature=[_image_spec(model, "uint8")])
    _write_folder(path, lambda temporary: archive.write_out(temporary, verbose=False))
    return path


def write_tflite(savedmodel: str, variant: str, path: str, representative: np.ndarray | None = None) -> str:
    """A TFLite flatbuffer of the SavedModel, ``variant`` float32 | float16 | int8.

    int8 is full-integer: every op int8 (``TFLITE_BUILTINS_INT8``), calibrated on
    ``representative`` uint8 images; it takes uint8 pixels (exact: pixels are
    integers) and returns the int8 embedding (dequantise with the output's scale
    and zero point; the cosine needs no dequantising).
    """
    import tensorflow as tf

    signature = "serving_uint8" if variant == "int8" else "serving_default"
    converter = tf.lite.TFLiteConverter.from_saved_model(savedmodel, signature_keys=[signature])
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        if representative is None or not len(representative):
            raise ValueError("int8 TFLite needs representative images (the data set's held-out images)")
        images = np.asarray(representative, np.uint8)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.int8
    elif variant != "float32":
        raise ValueError(f"unknown TFLite variant {variant!r} (float32, float16, int8)")
    flatbuffer = converter.convert()
    _write_bytes(path, flatbuffer)
    return path


def write_onnx(model, path: str) -> str:
    """ONNX (opset 17) with input ``image`` (N, S, S, 3) float32 and output ``embedding``."""
    import tensorflow as tf
    import tf2onnx
    # The freezing step tf2onnx itself relies on; public TF offers no other way to turn captured
    # constants into graph constants.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    import logging

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)  # its optimiser narrates every pass
    height, width = (int(d) for d in model.input_shape[1:3])
    function = tf.function(lambda image: model(image, training=False))
    concrete = function.get_concrete_function(
        tf.TensorSpec([None, height, width, 3], tf.float32, name=INPUT_NAME))
    frozen = convert_variables_to_constants_v2(concrete)
    proto, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(), input_names=[frozen.inputs[0].name],
        output_names=[frozen.outputs[0].name], opset=ONNX_OPSET)
    _rename_io(proto, {frozen.inputs[0].name: INPUT_NAME, frozen.outputs[0].name: OUTPUT_NAME})
    _write_bytes(path, proto.SerializeToString())
    return path


def _rename_io(proto, names: dict) -> None:
    """Plain names (``image``, ``embedding``) instead of TensorFlow's ``image:0`` / ``Identity:0``."""
    graph = proto.graph
    for value in (*graph.input, *graph.output):
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = names.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = names.get(name, name)


def size_on_disk(path: str) -> int:
    """Bytes of a file, or of every file under a folder (a SavedModel)."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)
    return os.path.getsize(path)


def _write_bytes(path: str, data: bytes) -> None:
    from trainer.io import save_file

    def save(temporary):
        with open(temporary, "wb") as f:
            f.write(data)

    save_file(path, save)


def _write_folder(path: str, save) -> None:
    """Write a folder next to its final place, then swap it in (a reader never sees half of one)."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        target = os.path.join(temporary, "out")
        save(target)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
