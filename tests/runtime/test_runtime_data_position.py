"""Batches are a function of their position: skipping k batches equals resuming at batch k."""

import numpy as np
import pytest

from trainer.data.pipeline import array_batches, materialise, training_batches
from trainer.data.sources.base import DataSource


def arrays(count=40, size=8, classes=5):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
            np.arange(count, dtype=np.int32) % classes)


class TinyTFSource(DataSource):
    """A tf.data source (the path TFDS/TFRecord/folder sources take)."""

    def __init__(self):
        self.images, self.labels = arrays()
        self.image_size, self.num_classes, self.num_examples = 8, 5, len(self.labels)

    def train(self):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((self.images, self.labels))


def flip_augmentation():
    from augment.pipeline import build_augmentation

    return build_augmentation({"ops": [{"name": "flip", "p": 0.5}], "seed": None})


def as_list(batches):
    if hasattr(batches, "as_numpy_iterator"):
        batches = batches.as_numpy_iterator()
    return [(np.asarray(x), np.asarray(y)) for x, y in batches]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(x1, x2)


@pytest.mark.parametrize("path", ["arrays", "tf.data"])
def test_resuming_at_batch_k_replays_the_uninterrupted_batches(path):
    augment = flip_augmentation()

    def batches(start_epoch, skip_batches):
        if path == "arrays":
            images, labels = arrays()
            return array_batches(images, labels, 8, seed=3, steps_per_epoch=4, epochs=2,
                                 augment=augment, start_epoch=start_epoch, skip_batches=skip_batches)
        return training_batches(TinyTFSource(), 8, seed=3, steps_per_epoch=4, epochs=2,
                                augment=augment, start_epoch=start_epoch, skip_batches=skip_batches)

    full = as_list(batches(0, 0))
    assert len(full) == 8
    assert_same_batches(as_list(batches(0, 3)), full[3:])
    assert_same_batches(as_list(batches(1, 1)), full[5:])
    # The augmentation really draws per sample (not a no-op), and epochs are reshuffled.
    images, _ = arrays()
    flipped = [not np.array_equal(x, x[:, :, ::-1]) for x, _ in full]
    assert any(flipped)
    assert not np.array_equal(full[0][1], full[4][1])


def test_materialise_takes_arrays_from_memory_sources():
    images, labels = arrays()
    got_images, got_labels = materialise((images, labels.astype(np.int64)))
    assert got_images.shape == images.shape and got_labels.dtype == np.int32


def test_memory_source_renders_the_synthetic_faces():
    from trainer.registry import DATASETS

    source = DATASETS.build({"name": "memory", "image_size": 16, "train_identities": 4,
                             "images_per_identity": 2, "test_identities": 2,
                             "test_images_per_identity": 2})
    images, labels = source.train_arrays()
    assert images.shape == (8, 16, 16, 3) and images.dtype == np.uint8
    assert source.num_classes == 4 and source.num_examples == 8
    assert len(source.heldout()[1]) == 4 and len(source.heldout_families()) == 2
    from trainer.data.face_renderer import render_split

    np.testing.assert_array_equal(images, render_split(4, 2, 16, 0).images)
