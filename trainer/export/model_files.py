"""The exported embedding model: make it, write it, load it back (no deployment formats here).

``runs/<name>/export/embedding.keras`` takes images (B, S, S, 3), float32 RGB
pixels 0..255, and returns L2-normalised float32 embeddings. The built-in
components are made of Keras's own layers only, so the file loads in any
interpreter that has Keras, without this framework and without custom objects.

Inside the framework use :func:`load_embedding_model`: it first imports every
registered component (so plugin layers load too), loads in Keras safe mode,
freezes the model and turns any failure into a one-line ``ConfigError``.
Components (BCT's old model, a distillation teacher, backbone weights) load
model files through this module; ``trainer.export`` adds the deployment formats.
"""

from __future__ import annotations

import os

import keras

from trainer.errors import first_line
from trainer.registry import ConfigError, import_all_components

EXPORT_FILE = ("export", "embedding.keras")


def exportable(embedding_model: keras.Model) -> keras.Model:
    """Image in, L2-normalised float32 embedding out (built-in layers only)."""
    images = keras.Input(embedding_model.input_shape[1:], name="image")
    embedding = keras.layers.Activation("linear", dtype="float32", name="to_float32")(
        embedding_model(images))
    # The last layer's type and name are what ``verification.unnormalised`` strips for XNorm.
    embedding = keras.layers.UnitNormalization(axis=-1, dtype="float32", name="l2_normalize")(embedding)
    return keras.Model(images, embedding, name="face_embedding")


def export_embedding_model(model: keras.Model, run_dir: str) -> str:
    """Write ``model`` (an ``exportable``) to ``<run_dir>/export/embedding.keras`` atomically."""
    from trainer import io

    path = io.join(run_dir, *EXPORT_FILE)
    io.save_file(path, model.save)
    return path


def load_embedding_model(path, role: str = "model", image_size: int | None = None) -> keras.Model:
    """A frozen exported embedding model (``runs/<name>/export/embedding.keras``).

    ``role`` names the config key in errors (``loop.old_model``, ``loop.teacher``);
    ``image_size`` (the data's) is checked against the model's input.
    """
    if not path:
        raise ConfigError(f"{role} is not set: point it at an exported embedding model, e.g. "
                          f"{role}=runs/<name>/export/embedding.keras (python -m trainer writes one)")
    path = os.path.expanduser(str(path))
    if not os.path.exists(path):
        raise ConfigError(f"{role}={path} does not exist: train one first (python -m trainer) and "
                          f"use its runs/<name>/export/embedding.keras")
    import_all_components()
    try:
        # safe_mode=True (Keras's default, stated so it is never flipped by accident): a model
        # file is data; a Lambda layer's Python code in it is refused, never run (docs/trust.md).
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        if "safe_mode" in str(error):  # Keras refused code stored in the file
            raise ConfigError(f"{role}={path} holds Python code (a Lambda layer) and is refused: "
                              "model files are loaded in Keras safe mode, which never runs code "
                              "from a file (docs/trust.md); re-export it without Lambda layers") from None
        try:
            model = _rebuild_then_load_weights(path)
        except Exception:  # a corrupt or foreign file: one line, not a traceback
            raise ConfigError(f"{role}={path} could not be loaded as a Keras model: "
                              f"{first_line(error)}") from error
    model.trainable = False
    if image_size is not None:
        expected = tuple(model.input_shape[1:3])
        if expected != (int(image_size), int(image_size)):
            raise ConfigError(f"{role} takes {expected[0]}x{expected[1]} images but the data are "
                              f"{image_size}x{image_size}; set data.image_size={expected[0]}")
    return model


def _rebuild_then_load_weights(path: str) -> keras.Model:
    """Second way in for ``.keras`` files whose layers build lazily (weights created on first call).

    ``load_model`` loads weights into layers it builds from shapes alone, which
    fails for a (plugin) layer without ``build()``; running the rebuilt model
    once on zeros creates every weight, then the archive's weights load by structure.
    """
    import json
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    model = keras.saving.deserialize_keras_object(config)
    model(np.zeros((1, *model.input_shape[1:]), np.float32), training=False)
    model.load_weights(path)
    return model
