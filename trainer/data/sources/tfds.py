"""Any tensorflow-datasets data set by name (images and integer labels)."""

from __future__ import annotations

import os

from trainer.data.errors import DataError
from trainer.data.sources.base import DataSource
from trainer.errors import first_line
from trainer.registry import DATASETS


@DATASETS.register("tfds")
class TFDSSource(DataSource):
    """``dataset`` from the TFDS catalogue (or a local builder) at ``image_size``.

    Grey images are repeated to three channels; other sizes are resized
    (``resize: true``) or rejected. ``heldout_split`` (e.g. ``test``) must hold
    identities not trained on for verification to mean anything.
    """

    def __init__(self, dataset=None, data_dir="~/tensorflow_datasets", train_split="train",
                 heldout_split=None, image_size=112, resize=True, image_key="image", label_key="label",
                 download=True):
        import tensorflow_datasets as tfds

        if not dataset:
            raise DataError("data.dataset is not set; pass data.dataset=<tfds name>, e.g. data.dataset=mnist")
        tfds.disable_progress_bar()
        self.image_size, self.resize = int(image_size), bool(resize)
        self.image_key, self.label_key = image_key, label_key
        self.train_split, self.heldout_split = train_split, heldout_split
        try:
            self.builder = tfds.builder(str(dataset), data_dir=os.path.expanduser(str(data_dir)))
            if download:
                self.builder.download_and_prepare()
        except Exception as error:  # TFDS raises many types; the first line says what
            raise DataError(f"tfds data set {dataset!r} cannot be loaded: {first_line(error)}") from None
        features = self.builder.info.features
        for key in (image_key, label_key):
            if key not in features:
                raise DataError(f"tfds {dataset!r} has no feature {key!r}; its features: "
                                f"{', '.join(features.keys())} (set data.image_key / data.label_key)")
        self.num_classes = int(features[label_key].num_classes)
        splits = self.builder.info.splits
        for split in (train_split, heldout_split):
            if split is not None and split not in splits:
                raise DataError(f"tfds {dataset!r} has no split {split!r}; its splits: {', '.join(splits)}")
        self.num_examples = int(splits[train_split].num_examples)
        shape = features[image_key].shape
        if not self.resize and tuple(shape[:2]) != (self.image_size, self.image_size):
            raise DataError(f"tfds {dataset!r} images are {shape[0]}x{shape[1]}, not "
                            f"data.image_size={self.image_size}; set data.resize=true or the size")

    def _split(self, split):
        import tensorflow as tf

        size, image_key, label_key = self.image_size, self.image_key, self.label_key

        def pair(example):
            image = example[image_key]
            if image.shape[-1] == 1:
                image = tf.image.grayscale_to_rgb(image)
            if tuple(image.shape[:2]) != (size, size):
                image = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
                    image, [size, size], method="area")), 0, 255), tf.uint8)
            return tf.ensure_shape(image, [size, size, 3]), tf.cast(example[label_key], tf.int32)

        return self.builder.as_dataset(split=split, shuffle_files=False).map(
            pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def train(self):
        return self.apply_shard(self._split(self.train_split))

    def heldout(self):
        return self._split(self.heldout_split) if self.heldout_split else None
