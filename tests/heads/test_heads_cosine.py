"""The cosine classifier head: cosines, norms, sub-centre pooling, float32 under mixed precision."""

import numpy as np
import keras
import pytest

import trainer


def reference(x, w, k):
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
    return cos.reshape(len(x), -1, k).max(-1), np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("sub_centers", [1, 3])
def test_outputs_match_numpy(sub_centers):
    head = trainer.build("head", {"name": "cosine", "sub_centers": sub_centers}, num_classes=4)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    out = head(x)
    w = keras.ops.convert_to_numpy(head.kernel)
    assert w.shape == (6, 4 * sub_centers)
    cos, norm = reference(x.astype(np.float64), w.astype(np.float64), sub_centers)
    assert out["cos"].shape == (5, 4) and out["norm"].shape == (5, 1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["cos"]), cos, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["norm"]), norm, rtol=1e-6)


def test_float32_under_mixed_precision_and_config_round_trip():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        head = trainer.build("head", "cosine", num_classes=3)
        out = head(np.ones((2, 4), "float16"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(out["cos"].dtype) == "float32"
    assert keras.backend.standardize_dtype(head.kernel.dtype) == "float32"
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert revived.get_config() == head.get_config()


def test_feeds_every_margin_loss_in_a_model():
    """Embedding -> head -> loss inside a compiled (XLA) Keras model, incl. the state layer."""
    inputs = keras.Input((6,))
    head = trainer.build("head", {"name": "cosine", "sub_centers": 3}, num_classes=4)
    outputs = head(keras.layers.Dense(6)(inputs))
    model = keras.Model(inputs, outputs)
    loss = trainer.build("loss", "adaface")
    model.state_layer = loss.state_layer  # what the loop does: state becomes model state
    assert len(model.non_trainable_variables) == 2
    x = np.random.default_rng(1).normal(size=(8, 6)).astype("float32")
    y = np.arange(8) % 4

    @keras.backend.backend() == "tensorflow" and __import__("tensorflow").function(jit_compile=True)
    def step(x, y):
        return loss(y, model(x))

    assert np.isfinite(float(step(x, y)))
    assert float(loss.state_layer.norm_mean) != 20.0
