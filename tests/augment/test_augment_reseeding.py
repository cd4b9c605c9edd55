"""Reseeding from a batch position (exact resume): every registered op, a pipeline and a multi-view
draw the same at one position and differently at another; an op that cannot be reseeded is refused."""

import importlib
import pkgutil

import keras
import numpy as np
import pytest

import augment
from augment.multiview import MultiView
from augment.pipeline import AugmentPipeline, build_op, build_pipeline
from trainer.registry import AUGMENTS, ConfigError

# Every op module imported: ``AUGMENTS.add`` entries (Keras's layers) register when their module runs.
for module in pkgutil.iter_modules(augment.__path__, "augment."):
    importlib.import_module(module.name)

IMAGES = np.random.default_rng(0).uniform(0, 255, (4, 24, 24, 3)).astype("float32")
# A fixed transform draws nothing: the pipeline's p makes it random.
DRAWS_NOTHING = {"flip"}
# Keras layers whose defaults draw nothing (a zero factor) or that need a parameter.
PARAMS = {"random_hue": {"factor": 0.3}, "random_brightness": {"factor": 0.3},
          "random_contrast": {"factor": 0.3}, "random_saturation": {"factor": 0.3},
          "random_rotation": {"factor": 0.2}, "random_translation": {"height_factor": 0.2, "width_factor": 0.2},
          "random_zoom": {"height_factor": 0.3}, "random_shear": {"x_factor": 0.3},
          "random_sharpness": {"factor": 0.5}, "solarization": {"addition_factor": 0.5},
          "color_jitter": {"brightness_factor": 0.3}}


def draws(augmentation, position):
    augmentation.reseed(position, seed=11)
    out = augmentation(IMAGES)
    return np.asarray(out[0] if isinstance(out, tuple) else out)


@pytest.mark.parametrize("name", AUGMENTS.names())
def test_every_registered_op_reseeds_from_the_batch_position(name):
    op = build_op({"name": name, **PARAMS.get(name, {})}, seed=None)
    first, again, elsewhere = draws(op, 3), draws(op, 3), draws(op, 4)
    np.testing.assert_array_equal(first, again)
    assert np.array_equal(first, elsewhere) == (name in DRAWS_NOTHING)


def test_pipelines_and_views_reseed_every_op_they_hold():
    pipeline = build_pipeline([{"name": "flip", "p": 0.5}, {"name": "random_rotation", "factor": 0.2}], seed=1)
    views = MultiView([pipeline, build_pipeline([{"name": "occlusion"}], seed=2)])
    for augmentation in (pipeline, views):
        np.testing.assert_array_equal(draws(augmentation, 7), draws(augmentation, 7))
        assert not np.array_equal(draws(augmentation, 7), draws(augmentation, 8))


class NoSeedAttribute(keras.layers.Layer):
    """A data-layer-like op whose generator Keras cannot key: it has ``generator`` but no ``seed``."""

    def __init__(self):
        from trainer.keras_private import DataLayer

        super().__init__()
        self.inner = type("Inner", (DataLayer,), {"call": lambda self, x: x})()
        self.inner.generator = keras.random.SeedGenerator(0)

    def call(self, images):
        return self.inner(images)


def test_an_op_that_cannot_be_reseeded_is_refused_when_built():
    with pytest.raises(ConfigError, match="cannot be reseeded from the batch position"):
        AugmentPipeline([NoSeedAttribute()])


def test_keras_augmix_is_refused_it_draws_with_pythons_random():
    with pytest.raises(ConfigError, match="AugMix: it picks each chain's ops with Python's random"):
        build_op({"name": "keras.layers.AugMix"}, seed=None)
