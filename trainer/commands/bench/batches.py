"""The in-memory batches the model steps train on, and how ``fit`` reads them per backend."""

from __future__ import annotations

import keras
import numpy as np


def random_batches(count: int, batch_size: int, image_size: int, num_classes: int, seed: int):
    """``count`` batches of (float32 pixels 0..255, int32 labels), the pipeline's output format."""
    rng = np.random.default_rng(seed)
    return [(rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype(np.float32),
             rng.integers(0, num_classes, batch_size).astype(np.int32)) for _ in range(count)]


def in_memory_data(batches):
    """What ``fit`` reads: a repeating ``tf.data`` of the batches (TF), or a NumPy generator (JAX)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        stacked = keras.tree.map_structure(lambda *parts: np.stack(parts), *batches)
        # no trailing prefetch: nothing to overlap for slices already in memory, and deleting
        # an endless prefetching iterator at the end of fit() took 14-24 s on the shared CPU host
        return tf.data.Dataset.from_tensor_slices(stacked).repeat()

    def cycle():  # a generator: what Keras's JAX trainer reads array sources from
        while True:
            yield from batches

    return cycle()
