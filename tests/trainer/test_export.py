"""The exported embedding model loads with plain Keras (no framework import) and reproduces
the embeddings; the framework's loader freezes it and fails in one line."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import trainer
from trainer.builders import build_embedding_model
from trainer.export.model_files import export_embedding_model, exportable, load_embedding_model
from trainer.registry import ConfigError

SIZE = 32
# The default job (tiny + gap) and the reference pairs, plus a keras.applications trunk.
CASES = {
    "default": [],
    "iresnet18_e": ["backbone=iresnet18", "neck=e", "preprocess.channel_order=bgr"],
    "mobilefacenet_gdc": ["backbone=mobilefacenet", "neck=gdc"],
    "mobilenetv3_gap": ["backbone=mobilenetv3_small", "neck=gap"],
}

FRESH_LOAD = """
import json, sys
import keras, numpy as np
cases = json.loads(sys.argv[1])
images = np.load(sys.argv[2])
for name, path in cases.items():
    model = keras.saving.load_model(path)
    np.save(path + ".npy", keras.ops.convert_to_numpy(model(images, training=False)))
framework = sorted(m for m in sys.modules if m.split(".")[0] in
                   ("trainer", "models", "augment", "loops", "losses"))
print(json.dumps(framework))
"""


def perturb_normalisation(model, seed):
    """Non-trivial BN statistics, gammas, betas and biases (kernels are random already), so a
    weight that fails to load changes the embeddings."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        kind = variable.path.rsplit("/", 1)[-1]
        if kind in ("gamma", "moving_variance"):
            variable.assign(rng.uniform(0.8, 1.2, variable.shape).astype(variable.dtype))
        elif kind in ("beta", "moving_mean", "bias"):
            variable.assign(rng.uniform(-0.1, 0.1, variable.shape).astype(variable.dtype))


@pytest.mark.e2e
def test_exports_load_with_plain_keras_and_reproduce_embeddings(tmp_path):
    images = np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    paths, expected = {}, {}
    for seed, (name, overrides) in enumerate(CASES.items()):
        cfg = trainer.compose([*overrides, "neck.embedding_dim=32"])
        model = exportable(build_embedding_model(cfg, SIZE))
        perturb_normalisation(model, seed)
        paths[name] = export_embedding_model(model, str(tmp_path / name))
        expected[name] = keras.ops.convert_to_numpy(model(images, training=False))
        assert np.isfinite(expected[name]).all(), name

    result = subprocess.run(
        [sys.executable, "-c", FRESH_LOAD, json.dumps(paths), str(tmp_path / "images.npy")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [], "the load imported the framework"
    for name, path in paths.items():
        np.testing.assert_array_equal(np.load(path + ".npy"), expected[name], err_msg=name)
        np.testing.assert_allclose(np.linalg.norm(expected[name], axis=1), 1.0, rtol=1e-5)

    # The framework's loader: the same model, frozen, input size checked in one line.
    loaded = load_embedding_model(paths["iresnet18_e"], "loop.teacher", image_size=SIZE)
    assert not loaded.trainable_weights
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(images)), expected["iresnet18_e"])
    with pytest.raises(ConfigError, match="takes 32x32 images but the data are 48x48"):
        load_embedding_model(paths["default"], "loop.teacher", image_size=48)


def test_loader_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="model is not set"):
        load_embedding_model(None)
    with pytest.raises(ConfigError, match="does not exist"):
        load_embedding_model(tmp_path / "missing.keras")
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(ConfigError, match="could not be loaded as a Keras model") as error:
        load_embedding_model(broken, "loop.old_model")
    assert "\n" not in str(error.value)
