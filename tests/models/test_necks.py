"""Necks: shapes, the E neck's fixed gamma and float32 tail, built-in layers only, config round-trips."""

import keras
import numpy as np
import pytest

from trainer.registry import NECKS

FEATURES = np.random.default_rng(0).normal(size=(3, 4, 4, 8)).astype("float32")


@pytest.mark.parametrize("name", ["e", "gdc", "gap", "vit_head"])
def test_shape_and_config_round_trip(name):
    neck = NECKS.build({"name": name}, embedding_dim=16)
    out = keras.ops.convert_to_numpy(neck(FEATURES, training=False))
    assert out.shape == (3, 16) and out.dtype == np.float32
    # A functional model of Keras's own layers: saved models need no custom objects.
    assert all(type(layer).__module__.startswith("keras.") for layer in neck.model.layers)
    clone = keras.Model.from_config(neck.model.get_config())
    assert clone.get_config() == neck.model.get_config()


@pytest.mark.parametrize("name", ["e", "gap", "vit_head"])
def test_tokens_input(name):
    tokens = np.random.default_rng(1).normal(size=(2, 9, 8)).astype("float32")
    assert NECKS.build({"name": name}, embedding_dim=5)(tokens).shape == (2, 5)


def test_e_neck_gamma_is_fixed_and_tail_is_float32():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        neck = NECKS.build({"name": "e", "dropout": 0.4}, embedding_dim=16)
        out = neck(FEATURES, training=False)
    finally:
        keras.config.set_dtype_policy("float32")
    assert out.dtype == "float32"
    dense, features = neck.model.get_layer("fc"), neck.model.get_layer("features")
    assert dense.compute_dtype == "float32" and features.compute_dtype == "float32"
    assert not features.gamma.trainable
    trainable = {v.path for v in neck.model.trainable_weights}
    assert not any("features/gamma" in p for p in trainable)
    assert any("features/gamma" in v.path for v in neck.model.weights)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(features.gamma), 1.0)


def test_gdc_kernel_covers_the_map():
    neck = NECKS.build({"name": "gdc"}, embedding_dim=4)
    neck(FEATURES)
    assert tuple(neck.model.get_layer("gdc_conv").kernel.shape[:2]) == (4, 4)


def test_vit_head_shapes_follow_insightface():
    tokens = np.zeros((2, 9, 8), np.float32)
    neck = NECKS.build({"name": "vit_head"}, embedding_dim=6)
    neck(tokens)
    assert tuple(neck.model.get_layer("hidden").kernel.shape) == (72, 8)
    assert tuple(neck.model.get_layer("fc").kernel.shape) == (8, 6)
