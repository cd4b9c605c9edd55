"""An in-memory data source of NumPy arrays; needs no TensorFlow (JAX hosts, benchmarks, tests).

``kind: faces`` renders the built-in synthetic faces with the same renderer and
seeds as ``data=synthetic_faces`` (identical images, no TFDS cache); ``random``
is uniform noise with random labels (throughput only); ``npz`` loads arrays
from a file with ``train_images``/``train_labels`` (and optionally
``test_images``/``test_labels``). The training pipeline feeds it to ``fit`` as
a generator of NumPy batches (``train_arrays``), shuffled per epoch and
position-keyed like the ``tf.data`` path.
"""

from __future__ import annotations

import numpy as np

from trainer.data.errors import DataError
from trainer.data.sources.base import DataSource
from trainer.registry import DATASETS

KINDS = ("faces", "random", "npz")


@DATASETS.register("memory")
class MemorySource(DataSource):
    """NumPy arrays held in memory: rendered faces, random pixels, or an ``.npz`` file."""

    in_memory = True

    def __init__(self, kind="faces", image_size=32, train_identities=100, images_per_identity=10,
                 test_identities=40, test_images_per_identity=5, seed=0, path=None):
        if kind not in KINDS:
            raise DataError(f"data.kind '{kind}' is not one of {', '.join(KINDS)}")
        self.kind = kind
        self.seed = int(seed)
        self._families = None
        if kind == "npz":
            self._load_npz(path)
        else:
            size = int(image_size)
            self._train = self._make(int(train_identities), int(images_per_identity), size, 0)
            self._test = self._make(int(test_identities), int(test_images_per_identity), size,
                                    int(train_identities))
        images, labels = self._train
        if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
            raise DataError(f"data=memory needs square RGB images (N, S, S, 3); got {images.shape}")
        self.image_size = int(images.shape[1])
        self.num_classes = int(labels.max()) + 1 if len(labels) else 0
        self.num_examples = int(len(labels))

    def _make(self, identities: int, per_identity: int, size: int, offset: int):
        if self.kind == "random":
            rng = np.random.default_rng([self.seed, offset])
            count = identities * per_identity
            images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
            return images, np.repeat(np.arange(identities, dtype=np.int32), per_identity)
        from trainer.data.face_renderer import render_split

        split = render_split(identities, per_identity, size, self.seed, identity_offset=offset)
        if offset:  # the held-out block: family of each identity, for album evaluation
            self._families = np.asarray([i.family for i in split.identities], np.int64)
        return split.images, split.labels.astype(np.int32)

    def _load_npz(self, path) -> None:
        if not path:
            raise DataError("data.kind=npz needs data.path=FILE.npz (train_images, train_labels)")
        try:
            arrays = np.load(str(path))
            self._train = (arrays["train_images"], arrays["train_labels"].astype(np.int32))
            self._test = ((arrays["test_images"], arrays["test_labels"].astype(np.int32))
                          if "test_images" in arrays else None)
        except (OSError, KeyError, ValueError) as error:
            raise DataError(f"data.path={path}: cannot read train_images/train_labels ({error})") from None

    # -- DataSource -----------------------------------------------------------
    def train_arrays(self):
        """(uint8 images (N, S, S, 3), int32 labels (N,)) in a fixed order."""
        return self._train

    def train(self):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(self._train)

    def heldout(self):
        """The held-out identities as a pair of arrays (``materialise`` accepts it as is)."""
        return self._test

    def heldout_families(self):
        return self._families

    @property
    def fits_in_memory(self) -> bool:
        return True
