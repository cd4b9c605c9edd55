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


def epoch_seed(seed: int, epoch):
    """A distinct, reproducible shuffle seed per epoch (so resuming at epoch e replays epoch e)."""
    return tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64)


def training_batches(source, batch_size: int, seed: int, augment=None, start_epoch: int = 0,
                     shuffle_buffer: int = 20_000, views: int = 1):
    """An endless dataset of ``(images, labels)`` batches, epochs concatenated in order.

    ``views`` > 1 repeats each image so a multi-view ``augment`` can make its
    views; ``augment`` maps a batch ``(images, labels)`` to the same structure.
    """
    examples = source.train()
    if source.fits_in_memory:
        examples = examples.cache()
    buffer = min(shuffle_buffer, max(source.num_examples, 1))

    def one_epoch(epoch):
        return examples.shuffle(buffer, seed=epoch_seed(seed, epoch), reshuffle_each_iteration=False)

    batches = (tf.data.Dataset.range(start_epoch, 2**62)
               .flat_map(one_epoch)
               .map(as_float_pixels, num_parallel_calls=AUTOTUNE)
               .batch(batch_size, drop_remainder=True))
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
