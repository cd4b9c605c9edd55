"""Class-balanced P×K batches for pair, triplet and contrastive losses.

Mined pair losses (FaceNet triplets, batch-hard; Hermans et al. 2017) need
positives in every batch: a uniformly shuffled batch of 128 from 10k
identities holds almost none. A P×K batch holds P identities with K images
each, so each anchor has K - 1 positives and (P - 1)·K negatives.

On ``tf.data`` it is built from streams, not indices, so it works for any
source size: each epoch is shuffled under its own seed, consecutive images of
one identity are grouped into windows of K (``group_by_window``; an
identity's leftover images fewer than K are dropped for that epoch), and P
windows make a batch. The NumPy path (in-memory sources) does the same with
indices: windows in the order the shuffle completes them. An identity can,
rarely, fill two windows of one batch; losses treat that as 2K images of one
identity, which is harmless. Batches are keyed on their position like the
uniform pipeline's, so resuming mid-epoch replays them exactly.
"""

from __future__ import annotations

import numpy as np

from trainer.data.pipeline import array_batches, epoch_seed, epoch_shuffler, positioned_batches
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
                           skip_batches: int = 0, shuffle_buffer: int = 20_000):
    """``(images (P·K, H, W, 3) float32, labels (P·K,) int32)`` batches, epoch by epoch.

    Rows ``p·K … p·K + K - 1`` share an identity. Epochs are seeded like
    ``trainer.data.pipeline.training_batches`` (resuming at epoch e replays it)
    and cut to ``steps_per_epoch`` batches (wrapping around if the epoch is short).
    """
    k = int(images_per_identity)
    p = identities_per_batch(batch_size, k)
    if source.in_memory:
        images, labels = source.train_arrays()
        return array_batches(images, labels, batch_size, seed, steps_per_epoch, epochs,
                             augment=augment, start_epoch=start_epoch, skip_batches=skip_batches,
                             order_of=lambda epoch: identity_order(labels, p, k, seed, epoch,
                                                                   steps_per_epoch))
    import tensorflow as tf

    shuffled_epoch = epoch_shuffler(source, seed, shuffle_buffer)

    def one_epoch(epoch: int):
        windows = (shuffled_epoch(epoch)
                   .group_by_window(key_func=lambda image, label: tf.cast(label, tf.int64),
                                    reduce_func=lambda key, group: group.batch(k, drop_remainder=True),
                                    window_size=k))
        return windows.batch(p, drop_remainder=True).map(_flatten_identities)

    return positioned_batches(one_epoch, seed, steps_per_epoch, epochs, augment, start_epoch,
                              skip_batches)


def identity_order(labels, p: int, k: int, seed: int, epoch: int, steps_per_epoch: int) -> np.ndarray:
    """One epoch's example indices in P×K batches: K images of each of P identities per batch.

    A seeded permutation per pass (as the uniform order); an identity's images
    form windows of K in permutation order, emitted when complete, P windows a
    batch; passes repeat until ``steps_per_epoch`` batches are filled.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(epoch_seed(seed, epoch))
    needed, windows = steps_per_epoch * p, []
    while len(windows) < needed:
        pending: dict[int, list[int]] = {}
        before = len(windows)
        for index in rng.permutation(len(labels)):
            group = pending.setdefault(int(labels[index]), [])
            group.append(int(index))
            if len(group) == k:
                windows.append(group[:])
                group.clear()
        if len(windows) == before:
            raise ConfigError(f"no identity has {k} images: loop.images_per_identity={k} is too many")
    return np.asarray([i for window in windows[:needed] for i in window], np.int64)


def _flatten_identities(images, labels):
    """(P, K, H, W, 3), (P, K) → (P·K, H, W, 3), (P·K,) with static shapes."""
    import tensorflow as tf

    shape = images.shape
    images = tf.reshape(images, [shape[0] * shape[1], *shape[2:]])
    return images, tf.reshape(labels, [shape[0] * shape[1]])
