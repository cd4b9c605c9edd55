"""Class-balanced P×K batches for pair, triplet and contrastive losses.

Mined pair losses (FaceNet triplets, batch-hard; Hermans et al. 2017) need
positives in every batch: a uniformly shuffled batch of 128 from 10k
identities holds almost none. A P×K batch holds P identities with K images
each, so each anchor has K - 1 positives and (P - 1)·K negatives.

Built from streams, not indices, so it works for any source size: each epoch
is shuffled under its own seed, consecutive images of one identity are grouped
into windows of K (``group_by_window``; an identity's leftover images fewer
than K are dropped for that epoch), and P windows make a batch. An identity
can, rarely, fill two windows of one batch; losses treat that as 2K images
of one identity, which is harmless.
"""

from __future__ import annotations

import tensorflow as tf

from trainer.data.pipeline import AUTOTUNE, epoch_shuffler
from trainer.registry import ConfigError


def identities_per_batch(batch_size: int, images_per_identity: int) -> int:
    """P for a global batch of ``batch_size`` and K = ``images_per_identity``; one-line errors."""
    k = int(images_per_identity)
    if k < 2:
        raise ConfigError(f"loop.images_per_identity={k}: a P×K batch needs K >= 2 images "
                          "per identity so that every anchor has a positive")
    if batch_size % k:
        raise ConfigError(f"trainer.batch_size={batch_size} is not a multiple of "
                          f"loop.images_per_identity={k}; use e.g. {max(k, batch_size // k * k)}")
    if batch_size // k < 2:
        raise ConfigError(f"trainer.batch_size={batch_size} with K={k} gives one identity per "
                          "batch; pair losses need negatives, raise the batch size")
    return batch_size // k


def class_balanced_batches(source, batch_size: int, images_per_identity: int, seed: int,
                           steps_per_epoch: int, epochs: int, augment=None, start_epoch: int = 0,
                           shuffle_buffer: int = 20_000):
    """``(images (P·K, H, W, 3) float32, labels (P·K,) int32)`` batches, epoch by epoch.

    Rows ``p·K … p·K + K - 1`` share an identity. Epochs are seeded like
    ``trainer.data.pipeline.training_batches`` (resuming at epoch e replays it)
    and cut to ``steps_per_epoch`` batches (wrapping around if the epoch is short).
    """
    k = int(images_per_identity)
    p = identities_per_batch(batch_size, k)
    shuffled_epoch = epoch_shuffler(source, seed, shuffle_buffer)

    def one_epoch(epoch: int):
        windows = (shuffled_epoch(epoch)
                   .group_by_window(key_func=lambda image, label: tf.cast(label, tf.int64),
                                    reduce_func=lambda key, group: group.batch(k, drop_remainder=True),
                                    window_size=k))
        return (windows.batch(p, drop_remainder=True)
                .map(_flatten_identities, num_parallel_calls=AUTOTUNE)
                .repeat()
                .take(steps_per_epoch))

    batches = one_epoch(start_epoch)
    for epoch in range(start_epoch + 1, epochs):
        batches = batches.concatenate(one_epoch(epoch))
    if augment is not None:
        batches = batches.map(augment, num_parallel_calls=AUTOTUNE)
    return batches.prefetch(AUTOTUNE)


def _flatten_identities(images, labels):
    """(P, K, H, W, 3), (P, K) → (P·K, H, W, 3), (P·K,) with static shapes."""
    shape = images.shape
    images = tf.reshape(images, [shape[0] * shape[1], *shape[2:]])
    return images, tf.reshape(labels, [shape[0] * shape[1]])
