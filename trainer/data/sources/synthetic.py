"""The built-in procedural faces as a data source (generated locally, cached by TFDS)."""

from __future__ import annotations

import os

import numpy as np

from trainer.data.errors import DataError
from trainer.data.sources.base import DataSource
from trainer.registry import DATASETS


@DATASETS.register("synthetic_faces")
class SyntheticFacesSource(DataSource):
    """Procedural faces: per-identity geometry and colouring, per-image pose, light, occlusion."""

    def __init__(self, data_dir="~/tensorflow_datasets", image_size=40, train_identities=300,
                 images_per_identity=20, test_identities=100, test_images_per_identity=10, seed=0):
        from trainer.data.synthetic_faces import SyntheticFacesConfig, prepare_synthetic_faces

        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
        data_dir = os.path.expanduser(str(data_dir))
        if os.path.exists(data_dir) and not os.path.isdir(data_dir):
            raise DataError(f"data.data_dir={data_dir} is a file, not a folder; "
                            "point it at a folder for the generated data set")
        self.builder = prepare_synthetic_faces(data_dir, SyntheticFacesConfig(
            image_size=int(image_size), train_identities=int(train_identities),
            images_per_identity=int(images_per_identity), test_identities=int(test_identities),
            test_images_per_identity=int(test_images_per_identity), seed=int(seed)))
        self.image_size = int(image_size)
        self.num_classes = int(train_identities)
        self.num_examples = int(self.builder.info.splits["train"].num_examples)

    def _split(self, split):
        import tensorflow as tf

        def pair(example):
            return example["image"], tf.cast(example["label"], tf.int32)

        return self.builder.as_dataset(split=split, shuffle_files=False).map(pair)

    def train(self):
        return self.apply_shard(self._split("train"))

    def heldout(self):
        return self._split("test")

    def heldout_families(self):
        families = {}
        examples = self.builder.as_dataset(split="test").map(lambda e: (e["label"], e["family"]))
        for label, family in examples.batch(4096).as_numpy_iterator():
            families.update(zip(label.tolist(), family.tolist()))
        return np.asarray([families[i] for i in range(len(families))], np.int64)
