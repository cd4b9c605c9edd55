"""Each exported file loaded in the runtime that will serve it, as ``runner(images) -> embeddings``.

A runner takes uint8 or float pixels (N, S, S, 3) and returns float32
embeddings (N, D); the int8 TFLite model's output is dequantised with its own
scale and zero point. Runners also answer ``runner(batch, training=False)``, so
``trainer.evaluation.verification.embed`` evaluates them like a Keras model.
"""

from __future__ import annotations

import abc
import os

import numpy as np


class Runner(abc.ABC):
    """An exported model in its own runtime, called like a Keras model (images in, embeddings out)."""

    runtime = "?"

    @abc.abstractmethod
    def run(self, images: np.ndarray) -> np.ndarray:
        """Embeddings of a float32 batch (B, S, S, 3) of 0..255 RGB pixels."""

    def __call__(self, images, training=False):
        del training  # inference only; the signature matches a Keras model's
        return self.run(np.asarray(images))


class KerasRunner(Runner):
    """The reference: the Keras model itself, compiled once per batch shape by ``predict_on_batch``."""

    runtime = "keras"

    def __init__(self, model):
        self.model = model

    def run(self, images):
        return np.asarray(self.model.predict_on_batch(np.asarray(images, np.float32)), np.float32)


class SavedModelRunner(Runner):
    runtime = "tf.saved_model.load"

    def __init__(self, path: str):
        import tensorflow as tf

        self.tf = tf
        self.signature = tf.saved_model.load(path).signatures["serving_default"]

    def run(self, images):
        images = self.tf.constant(np.asarray(images, np.float32))
        return self.signature(image=images)["embedding"].numpy()


def tflite_interpreter_class():
    """(Interpreter class, runtime name): LiteRT when installed, else TensorFlow's own."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "LiteRT (ai-edge-litert)"
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter, "tf.lite.Interpreter"


class TFLiteRunner(Runner):
    """One interpreter per batch size (resizing in place would re-plan the graph every call)."""

    def __init__(self, path: str, threads: int | None = None):
        self.interpreter_class, self.runtime = tflite_interpreter_class()
        with open(path, "rb") as f:
            self.content = f.read()
        self.threads = threads or os.cpu_count() or 1
        self.interpreters = {}

    def _interpreter(self, batch: int, shape):
        if batch not in self.interpreters:
            interpreter = self.interpreter_class(model_content=self.content, num_threads=self.threads)
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, [batch, *shape], strict=False)
            interpreter.allocate_tensors()
            self.interpreters[batch] = interpreter
        return self.interpreters[batch]

    def run(self, images):
        images = np.asarray(images)
        interpreter = self._interpreter(len(images), images.shape[1:])
        given, wanted = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        if np.issubdtype(given["dtype"], np.integer):
            images = np.clip(np.round(images), 0, 255)
        interpreter.set_tensor(given["index"], images.astype(given["dtype"]))
        interpreter.invoke()
        output = interpreter.get_tensor(wanted["index"]).astype(np.float32)
        scale, zero_point = wanted["quantization"]
        return (output - zero_point) * scale if scale else output


class OnnxRunner(Runner):
    runtime = "onnxruntime"

    def __init__(self, path: str):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def run(self, images):
        return self.session.run(None, {self.input: np.asarray(images, np.float32)})[0]


def runner_for(name: str, path: str) -> Runner:
    if name == "savedmodel":
        return SavedModelRunner(path)
    if name.startswith("tflite"):
        return TFLiteRunner(path)
    if name == "onnx":
        return OnnxRunner(path)
    raise ValueError(f"no runtime for format {name!r}")
