"""Preprocessing: the standard normalisation layer, decoding, Umeyama alignment."""

import io

import keras
import numpy as np
import pytest

from augment.preprocess import (
    ARCFACE_TEMPLATE, align_face, alignment_matrix, decode_and_resize)
from trainer.faces.template import similarity_transform as umeyama
from trainer.registry import PREPROCESSORS

PIXELS = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")


def test_standard_normalises_and_round_trips():
    layer = PREPROCESSORS.build({"name": "standard"})
    np.testing.assert_allclose(np.asarray(layer(PIXELS)), (PIXELS - 127.5) / 127.5, rtol=1e-6)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert clone.get_config() == layer.get_config()


def test_bgr_and_per_channel_statistics():
    node = {"name": "standard", "mean": [1.0, 2.0, 3.0], "std": [2.0, 4.0, 8.0], "channel_order": "bgr"}
    layer = PREPROCESSORS.build(node)
    want = (PIXELS[..., ::-1] - np.array([1.0, 2.0, 3.0])) / np.array([2.0, 4.0, 8.0])
    np.testing.assert_allclose(np.asarray(layer(PIXELS)), want, rtol=1e-5)
    # Built-in layers only, so saved models need no custom objects.
    assert all(type(part).__module__.startswith("keras.") for part in layer.layers)
    with pytest.raises(ValueError, match="channel_order"):
        PREPROCESSORS.build({"name": "standard", "channel_order": "rbg"})


def test_decode_and_resize_png():
    from PIL import Image

    image = (np.arange(20 * 30 * 3) % 251).reshape(20, 30, 3).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    out = decode_and_resize(buffer.getvalue(), size=16).numpy()
    assert out.shape == (16, 16, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 255.0


def test_template_maps_to_itself():
    np.testing.assert_allclose(alignment_matrix(ARCFACE_TEMPLATE), np.eye(3), atol=1e-9)


def test_umeyama_recovers_a_known_similarity():
    angle, scale, shift = np.deg2rad(17.0), 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = ARCFACE_TEMPLATE
    destination = source @ (scale * rotation).T + shift
    matrix = umeyama(source, destination)
    np.testing.assert_allclose(matrix[:2, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:2, 2], shift, atol=1e-9)
    # Landmarks of a face rotated and scaled in a photo align back to the template.
    np.testing.assert_allclose(alignment_matrix(destination) @ np.r_[destination[0], 1.0],
                               np.r_[ARCFACE_TEMPLATE[0], 1.0], atol=1e-9)


def test_align_face_undoes_rotation_and_scale():
    rng = np.random.default_rng(1)
    face = np.kron(rng.uniform(0, 255, (14, 14, 3)), np.ones((8, 8, 1))).astype(np.float32)
    # Photograph: the face scaled by 2 and rotated 10 degrees into a 260x260 image.
    angle, scale, shift = np.deg2rad(10.0), 2.0, np.array([30.0, 20.0])
    forward = np.eye(3)
    forward[:2, :2] = scale * np.array([[np.cos(angle), -np.sin(angle)],
                                        [np.sin(angle), np.cos(angle)]])
    forward[:2, 2] = shift
    import tensorflow as tf

    inverse = np.linalg.inv(forward).reshape(-1)[:8][None].astype(np.float32)
    photo = tf.raw_ops.ImageProjectiveTransformV3(
        images=face[None], transforms=inverse, output_shape=[260, 260], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")[0].numpy()
    landmarks = ARCFACE_TEMPLATE @ forward[:2, :2].T + shift
    aligned = align_face(photo, landmarks).numpy()
    assert aligned.shape == (112, 112, 3)
    centre = (slice(16, 96), slice(16, 96))
    assert np.abs(aligned[centre] - face[centre]).mean() < 6.0
