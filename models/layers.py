"""Batch normalisation as the model parts share it: one home for its settings.

* ``batch_norm``: insightface's BatchNorm (eps 1e-5, PyTorch momentum 0.1, i.e.
  Keras 0.9), so ported weights give the same outputs; backbones and necks use it.
* ``synchronized_batch_norm``: global-batch statistics across replicas, for the
  parts whose papers rely on them (SimCLR's projector, the GAN's generator).

Both return Keras's own ``BatchNormalization``, so exports stay portable.
"""

from __future__ import annotations

import keras

__all__ = ["BN_EPSILON", "BN_MOMENTUM", "batch_norm", "synchronized_batch_norm"]

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # PyTorch momentum=0.1 expressed the Keras way


def batch_norm(name: str | None = None, **kwargs) -> keras.layers.BatchNormalization:
    """insightface's BatchNorm; ``kwargs`` go to ``BatchNormalization``."""
    return keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name, **kwargs)


def synchronized_batch_norm(**kwargs) -> keras.layers.BatchNormalization:
    """A ``BatchNormalization`` whose statistics are those of the global batch.

    Under TensorFlow the layer synchronises them across ``tf.distribute``
    replicas. Under JAX the step is one SPMD program over the global batch
    already, and Keras accepts ``synchronized=True`` only with TensorFlow. The
    backend is read when the layer is made, not when this module is imported,
    so a backend chosen after the import is honoured.
    """
    return keras.layers.BatchNormalization(
        synchronized=keras.backend.backend() == "tensorflow", **kwargs)
