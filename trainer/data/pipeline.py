"""From a data source to the batches ``fit`` consumes.

Order of work, chosen for speed: decode/resize per example (sources do it),
cache small sets in memory, shuffle per epoch under a seed, batch with static
shapes, then augment *whole batches* (per-sample random draws, vectorised),
then prefetch. Pixels stay float32 in 0..255; normalisation is the model's
first layer, so an exported model takes plain images.
"""

from __future__ import annotations

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible shuffle seed per epoch (so resuming at epoch e replays epoch e)."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2**31 - 1)


def training_batches(source, batch_size: int, seed: int, steps_per_epoch: int, epochs: int,
                     augment=None, start_epoch: int = 0, shuffle_buffer: int = 20_000):
    """``(images, labels)`` batches for epochs ``start_epoch … epochs-1``, in order.

    Each epoch is shuffled with its own seed and cut to ``steps_per_epoch``
    full batches, so Keras epochs and data epochs coincide and a resumed run
    sees exactly the batches an uninterrupted one would. ``augment`` maps a
    batch ``(images, labels)`` to the same structure (multi-view included).
    """
    examples = source.train()
    if source.fits_in_memory:
        examples = examples.cache()
    buffer = min(shuffle_buffer, max(source.num_examples, 1))

    def one_epoch(epoch: int):
        return (examples.shuffle(buffer, seed=epoch_seed(seed, epoch))
                .map(as_float_pixels, num_parallel_calls=AUTOTUNE)
                .batch(batch_size, drop_remainder=True)
                .repeat()  # a steps_per_epoch larger than the data set wraps around
                .take(steps_per_epoch))

    batches = one_epoch(start_epoch)
    for epoch in range(start_epoch + 1, epochs):
        batches = batches.concatenate(one_epoch(epoch))
    if augment is not None:
        batches = batches.map(augment, num_parallel_calls=AUTOTUNE)
    return batches.prefetch(AUTOTUNE)


def as_float_pixels(image, label):
    return tf.cast(image, tf.float32), tf.cast(label, tf.int32)


def materialise(dataset, batch_size: int = 512):
    """(images uint8 [N,H,W,3], labels int32 [N]) as NumPy arrays, for evaluation sets."""
    import numpy as np

    images, labels = [], []
    for image_batch, label_batch in dataset.batch(batch_size).as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    if not images:
        return np.zeros((0, 1, 1, 3), np.uint8), np.zeros((0,), np.int32)
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)
