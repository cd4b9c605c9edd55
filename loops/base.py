"""What every training loop shares: the embedding model, regulariser losses, the global
batch under ``tf.distribute``, frozen reference models loaded from an export.

A loop is a ``keras.Model`` whose ``fit`` is Keras's own. Subclasses override
``compute_loss`` (portable: Keras's per-backend ``train_step`` does the gradient
work) and only where they must, ``train_step`` (several optimizers: ``loops.gan``).

Distribution: under ``tf.distribute`` each replica runs ``compute_loss`` on its
shard, Keras scales a reduced loss by ``1 / replicas`` and sums the gradients.
Losses that compare samples with each other (contrastive, triplet) must see the
*global* batch: :func:`gather_global` concatenates every replica's rows in
replica order, and its gradient (TensorFlow's ``all_gather`` gradient: an
all-reduce sum, then this replica's slice) makes the summed gradients equal to
those of one device on the whole batch. Under JAX, ``keras.distribution`` shards
one global program, so the batch is already global and nothing is gathered.
"""

from __future__ import annotations

import os

import keras
from keras import ops

from trainer.registry import ConfigError


class FaceLoop(keras.Model):
    """Base class: owns ``embedding_model`` (images 0..255 → embedding), used for eval and export."""

    def __init__(self, embedding_model, **kwargs):
        super().__init__(**kwargs)
        if embedding_model is None:
            raise ConfigError(f"loop '{type(self).__name__}' needs an embedding model")
        self.embedding_model = embedding_model

    # Constructor arguments that are Keras objects (serialised in get_config), and plain ones.
    keras_parts: tuple = ("embedding_model",)

    def loop_config(self) -> dict:
        """The subclass's plain constructor parameters (override)."""
        return {}

    def part(self, argument: str):
        """The object behind constructor argument ``argument`` (override if stored elsewhere)."""
        return getattr(self, argument)

    def get_config(self):
        config = keras.layers.Layer.get_config(self)  # name, trainable, dtype
        for argument in self.keras_parts:
            value = self.part(argument)
            config[argument] = None if value is None else keras.saving.serialize_keras_object(value)
        config.update(self.loop_config())
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for argument in cls.keras_parts:
            if config.get(argument) is not None:
                config[argument] = keras.saving.deserialize_keras_object(config[argument])
        return cls(**config)

    def embed(self, images, training=False):
        return self.embedding_model(images, training=training)

    def regularization_loss(self):
        """Sum of the layers' ``add_loss`` terms, scaled like Keras scales its own under replicas."""
        if not self.losses:
            return 0.0
        from keras.src.losses.loss import scale_loss_for_distribution

        return scale_loss_for_distribution(ops.sum(ops.stack(
            [ops.cast(loss, "float32") for loss in self.losses])))

    def training_batches(self, source, batch_size, seed, steps_per_epoch, epochs, augment=None,
                         start_epoch=0):
        """The default pipeline; loops that need other batches override this."""
        from trainer.data.pipeline import training_batches

        return training_batches(source, batch_size, seed, steps_per_epoch, epochs,
                                augment=augment, start_epoch=start_epoch)


def num_replicas() -> int:
    """Replicas of the current ``tf.distribute`` strategy (1 outside it and under JAX)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def gather_global(*tensors):
    """Every replica's rows, concatenated in replica order (identity on one device / JAX).

    Differentiable: the gradient that reaches a replica's rows is the sum of
    every replica's gradient with respect to them.
    """
    if num_replicas() == 1:
        return tensors if len(tensors) > 1 else tensors[0]
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: values are already whole
        return tensors if len(tensors) > 1 else tensors[0]
    gathered = tuple(_gather(context, t, tf) for t in tensors)
    return gathered if len(gathered) > 1 else gathered[0]


def _gather(context, tensor, tf):
    """One tensor's all_gather, with its static shape restored (all_gather loses it)."""
    tensor = tf.convert_to_tensor(tensor)
    if not tensor.dtype.is_floating:  # labels: no gradient to route
        tensor = tf.stop_gradient(tensor)
    gathered = context.all_gather(tensor, axis=0)
    rows = None if tensor.shape[0] is None else tensor.shape[0] * context.num_replicas_in_sync
    return tf.ensure_shape(gathered, [rows, *tensor.shape[1:]])


def load_frozen_embedding_model(path, role: str, image_size: int | None = None) -> keras.Model:
    """A frozen exported embedding model (``runs/<name>/export/embedding.keras``).

    ``role`` names the config key in errors (``loop.old_model``, ``loop.teacher``).
    """
    if not path:
        raise ConfigError(f"{role} is not set: point it at an exported embedding model, e.g. "
                          f"{role}=runs/<name>/export/embedding.keras (python -m trainer writes one)")
    path = os.path.expanduser(str(path))
    if not os.path.exists(path):
        raise ConfigError(f"{role}={path} does not exist: train one first (python -m trainer) and "
                          f"use its runs/<name>/export/embedding.keras")
    _import_serializable_components()
    try:
        model = keras.saving.load_model(path, compile=False, custom_objects=LEGACY_OBJECTS)
    except Exception as error:
        try:
            model = _rebuild_then_load_weights(path)
        except Exception:  # a corrupt or foreign file: one line, not a traceback
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(f"{role}={path} could not be loaded as a Keras model: {first}") from error
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
    fails for a layer without ``build()``; running the rebuilt model once on
    zeros creates every weight, then the archive's weights load by structure.
    """
    import json
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    model = keras.saving.deserialize_keras_object(config, custom_objects=LEGACY_OBJECTS)
    model(np.zeros((1, *model.input_shape[1:]), np.float32), training=False)
    model.load_weights(path)
    return model


class _LegacyL2Normalize(keras.layers.Layer):
    """Last layer of exports written before the export switched to ``UnitNormalization``."""

    def call(self, inputs):
        inputs = ops.cast(inputs, "float32")
        return inputs / ops.maximum(ops.norm(inputs, axis=-1, keepdims=True), 1e-12)


LEGACY_OBJECTS = {"L2Normalize": _LegacyL2Normalize, "facetrain>L2Normalize": _LegacyL2Normalize}


def _import_serializable_components() -> None:
    """Register every facetrain Keras class so an exported model loads without custom objects."""
    from trainer.registry import BACKBONES, NECKS, PREPROCESSORS

    for registry in (BACKBONES, NECKS, PREPROCESSORS):
        registry.names()


def output_dim(model: keras.Model) -> int:
    return int(model.output_shape[-1])


def l2_normalize(x):
    x = ops.cast(x, "float32")
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))
