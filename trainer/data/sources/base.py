"""The interface every data source implements.

A source yields *unbatched* ``(image, label)`` pairs: ``image`` a uint8 tensor
(H, W, 3) already at ``image_size``, ``label`` an int32 identity index in
``[0, num_classes)``. Batching, shuffling, augmentation and sharding are the
pipeline's job (``trainer.data.pipeline``), so a new format is one small class.
"""

from __future__ import annotations

import abc


class DataSource(abc.ABC):
    """Base class: set the attributes below in ``__init__`` and implement ``train``."""

    image_size: int
    num_classes: int
    num_examples: int
    # (num_shards, index) set by ``shard``; sources that honour it apply it in ``train``.
    shard_spec: tuple[int, int] = (1, 0)
    # Why ``heldout()`` is None, in words for the user (None: the source never has held-out data).
    heldout_unavailable: str | None = None
    # True: ``train_arrays()`` gives the training set as NumPy arrays, and batches are built
    # without TensorFlow (the JAX-host path); ``train()`` is then not used for training.
    in_memory: bool = False
    # (file, record, reason) of each record skipped as corrupt (data.on_corrupt=skip), so far.
    corrupt_records: tuple | list = ()

    @abc.abstractmethod
    def train(self):
        """``tf.data.Dataset`` of (uint8 image, int32 label) in a fixed order."""

    def train_arrays(self):
        """(uint8 images (N, H, W, 3), int32 labels (N,)) NumPy arrays; only when ``in_memory``."""
        raise TypeError(f"{type(self).__name__} is not an in-memory source (in_memory is False)")

    def heldout(self):
        """``tf.data.Dataset`` of (uint8 image, int32 label) of identities not trained on, or None.

        Used for held-out verification pairs and album evaluation.
        """
        return None

    def heldout_families(self):
        """Family id per held-out identity (a NumPy array indexed by label), or None."""
        return None

    def shard(self, num_shards: int, index: int) -> "DataSource":
        """Read only every ``num_shards``-th example from ``index`` on (one worker's share).

        The runtime calls it with (number of input workers, this worker's index)
        when tf.data auto-sharding is off; returns ``self``. ``num_examples``
        stays the global count.
        """
        num_shards, index = int(num_shards), int(index)
        if num_shards < 1 or not 0 <= index < num_shards:
            raise ValueError(f"shard index {index} is not in [0, {num_shards})")
        self.shard_spec = (num_shards, index)
        return self

    def apply_shard(self, dataset):
        """``dataset`` cut to this worker's shard (no-op without ``shard``)."""
        num_shards, index = self.shard_spec
        return dataset.shard(num_shards, index) if num_shards > 1 else dataset

    @property
    def fits_in_memory(self) -> bool:
        """Small decoded sets are cached in memory after the first epoch."""
        return self.num_examples * self.image_size * self.image_size * 3 < 2**30
