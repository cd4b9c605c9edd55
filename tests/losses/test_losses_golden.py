"""facetrain losses vs pytorch-metric-learning 2.9.0 (float64 values and embedding gradients).

The golden files are made offline by scripts/make_loss_goldens.py; no torch here.
"""

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

import trainer
from trainer.testing.inputs import head_outputs

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden"
META = json.loads((GOLDEN / "pml_2.9.0.json").read_text())
ARRAYS = np.load(GOLDEN / "pml_2.9.0.npz")


def ours(case):
    """Our loss and d loss / d embeddings on the golden inputs (float32 maths)."""
    config = META["cases"][case]["facetrain"]
    loss = trainer.build("loss", config, num_classes=5)
    x = tf.constant(ARRAYS[f"{case}/embeddings"], tf.float32)
    labels = ARRAYS[f"{case}/labels"].astype("int32")
    weights = ARRAYS.get(f"{case}/weights")
    with tf.GradientTape() as tape:
        tape.watch(x)
        if weights is None:
            value = loss(labels, x)
        else:
            outputs = head_outputs(x, weights.astype("float32"))
            sub_centers = config.get("sub_centers", 1)
            if sub_centers > 1:  # the cosine head's class-major max-pooling
                outputs["cos"] = tf.reduce_max(tf.reshape(outputs["cos"], (len(labels), -1, sub_centers)), -1)
            value = loss(labels, outputs)
    return float(value), tape.gradient(value, x).numpy()


@pytest.mark.parametrize("case", sorted(META["cases"]))
def test_matches_pytorch_metric_learning(case):
    value, grad = ours(case)
    expected_value = float(ARRAYS[f"{case}/loss"])
    expected_grad = ARRAYS[f"{case}/grad"]
    # float32 maths against float64 truth: relative 2e-5 on the value, gradients to 1e-4 of their scale.
    assert value == pytest.approx(expected_value, rel=2e-5, abs=1e-6), META["cases"][case]
    scale = max(np.max(np.abs(expected_grad)), 1e-3)
    np.testing.assert_allclose(grad, expected_grad, rtol=0, atol=1e-4 * scale)


def test_goldens_cover_the_fallback_branch_of_arcface():
    """Two golden samples sit beyond pi - m, where ArcFace switches to cos - m sin m."""
    x = ARRAYS["arcface/embeddings"]
    w = ARRAYS["arcface/weights"]
    labels = ARRAYS["arcface/labels"]
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))
    angles = np.arccos(cos[np.arange(len(x)), labels])
    assert np.sum(angles > np.pi - 0.5) >= 2 and np.sum(angles < np.pi - 0.5) >= 2
