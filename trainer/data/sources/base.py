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

    @abc.abstractmethod
    def train(self):
        """``tf.data.Dataset`` of (uint8 image, int32 label) in a fixed order."""

    def heldout(self):
        """``tf.data.Dataset`` of (uint8 image, int32 label) of identities not trained on, or None.

        Used for held-out verification pairs and album evaluation.
        """
        return None

    def heldout_families(self):
        """Family id per held-out identity (a NumPy array indexed by label), or None."""
        return None

    @property
    def fits_in_memory(self) -> bool:
        """Small decoded sets are cached in memory after the first epoch."""
        return self.num_examples * self.image_size * self.image_size * 3 < 2**30
