"""Deployment formats of the exported embedding model, each checked in its own runtime.

    python -m trainer.export model_path=runs/<name>/export/embedding.keras formats=[savedmodel,tflite,onnx]

writes, next to ``embedding.keras``:

| format | file | runtime that checks it |
| --- | --- | --- |
| ``savedmodel`` | ``embedding_savedmodel/`` (``serving_default``: float32 pixels; ``serving_uint8``) | ``tf.saved_model.load`` |
| ``tflite_float32`` | ``embedding_float32.tflite`` | LiteRT interpreter |
| ``tflite_float16`` | ``embedding_float16.tflite`` (float16 weights) | LiteRT interpreter |
| ``tflite_int8`` | ``embedding_int8.tflite`` (full integer: uint8 pixels in, int8 embedding out) | LiteRT interpreter |
| ``onnx`` | ``embedding.onnx`` (opset 17) | onnxruntime |

``tflite`` means all three TFLite variants. Every artefact takes RGB pixels 0..255,
(B, S, S, 3) with a free batch dimension, and returns the L2-normalised
embedding, like ``embedding.keras``; ``parity.json`` (``trainer.exporters.parity``)
says how close each one stays to the Keras model. TensorFlow is the one backend
that writes them (the SavedModel is traced from the Keras model).
"""

from __future__ import annotations

from trainer.registry import ConfigError, did_you_mean

TFLITE_VARIANTS = ("tflite_float32", "tflite_float16", "tflite_int8")
FORMATS = ("savedmodel", *TFLITE_VARIANTS, "onnx")
GROUPS = {"tflite": TFLITE_VARIANTS, "all": FORMATS}

# What each format needs beyond the base install (the ``export`` extra), as import names.
REQUIRES = {"onnx": ("tf2onnx", "onnx", "onnxruntime")}
EXTRA_HINT = "pip install 'facetrain[export]'"


def resolve_formats(formats) -> list[str]:
    """``formats=[savedmodel,tflite]`` → the concrete format names, in the table's order.

    An unknown name is one ``ConfigError`` line with the nearest names.
    """
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.strip("[]").split(",") if f.strip()]
    chosen = set()
    for name in formats or ():
        name = str(name).strip().lower()
        if name in GROUPS:
            chosen.update(GROUPS[name])
        elif name in FORMATS:
            chosen.add(name)
        else:
            raise ConfigError(f"unknown export format {name!r}: "
                              f"{did_you_mean(name, (*FORMATS, *GROUPS))}")
    return [name for name in FORMATS if name in chosen]


def check_available(formats) -> None:
    """Refuse before any work when an optional package a format needs is missing, or when
    the backend is not TensorFlow (SavedModel, TFLite and tf2onnx trace TensorFlow graphs)."""
    import importlib.util

    import keras

    if formats and keras.backend.backend() != "tensorflow":
        raise ConfigError(f"export formats {', '.join(formats)} are written with the TensorFlow backend, "
                          f"not {keras.backend.backend()}; unset KERAS_BACKEND for the export")
    missing = {}
    for name in formats:
        for module in REQUIRES.get(name, ()):
            if importlib.util.find_spec(module) is None:
                missing.setdefault(module, []).append(name)
    if missing:
        needs = ", ".join(f"{module} (for {'/'.join(names)})" for module, names in missing.items())
        raise ConfigError(f"export formats need packages that are not installed: {needs}; {EXTRA_HINT}")
