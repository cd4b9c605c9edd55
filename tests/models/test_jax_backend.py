"""The same components under the JAX backend (one subprocess, small shapes).

Covers backbones + necks (forward, jit-compiled train step), our augmentation
ops eagerly on JAX arrays, and a preset inside tf.data while Keras runs on JAX.
"""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import numpy as np, keras, tensorflow as tf
    assert keras.backend.backend() == "jax"
    from trainer.registry import BACKBONES, NECKS, AUGMENTS
    from augment.pipeline import build_augmentation
    for name, options, neck, shape in [
            ("tiny", {}, "e", 32),
            ("iresnet", {"layers": [1, 1, 1, 1], "widths": [8, 8, 16, 16], "stem_width": 8}, "e", 32),
            ("vit_t", {"depth": 1}, "gap", 36)]:
        backbone = BACKBONES.build({"name": name, **options}, input_shape=(shape, shape, 3))
        model = keras.Model(backbone.input, NECKS.build({"name": neck}, embedding_dim=8)(backbone.output))
        x = np.random.default_rng(0).uniform(-1, 1, (2, shape, shape, 3)).astype("float32")
        if name == "tiny":  # one jit-compiled train step; the others a jit-compiled forward
            model.compile(optimizer="sgd", loss="mse", jit_compile=True)
            assert np.isfinite(model.train_on_batch(x, np.zeros((2, 8), "float32")))
        assert np.isfinite(model.predict_on_batch(x)).all()  # jit-compiled forward
    images = np.random.default_rng(1).uniform(0, 255, (4, 24, 24, 3)).astype("float32")
    for op in ["flip", "random_resized_crop", "gaussian_blur", "low_resolution", "occlusion",
               "mixup", "cutmix"]:
        out = np.asarray(AUGMENTS.build({"name": op}, seed=1)(images))
        assert out.shape == images.shape and 0 <= out.min() and out.max() <= 255.001, op
    pipeline = build_augmentation({"ops": [{"name": "occlusion", "p": 0.5},
                                           {"name": "jpeg"}, {"name": "color_jitter",
                                           "brightness_factor": 0.2}], "seed": 2})
    ds = tf.data.Dataset.from_tensors((images, np.arange(4))).map(pipeline)
    out, labels = next(iter(ds))
    assert out.shape == images.shape and labels.shape == (4,)
    print("JAX-OK")
""")


@pytest.mark.e2e  # one subprocess under KERAS_BACKEND=jax
def test_components_under_jax():
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": os.path.abspath(root),
           "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert "JAX-OK" in result.stdout, result.stderr[-3000:]
