"""Backbones: reference parameter counts, shapes, exact padding, XLA, save/load, remat."""

import os

import keras
import numpy as np
import pytest

from models.backbones.iresnet import iresnet_block
from trainer.registry import BACKBONES, NECKS

# insightface reference (face.md): weights incl. the fixed gamma, and BN moving statistics.
REFERENCE = {
    "iresnet18": (24_025_600, 14_720),
    "iresnet34": (34_139_328, 25_856),
    "iresnet50": (43_590_848, 38_144),
    "iresnet100": (65_156_160, 69_632),
    "iresnet200": (118_833_920, 136_064),
    "mobilefacenet": (2_059_520, 23_808),
}

# Small inputs so every backbone builds and runs fast; ViT at 2 blocks.
SMALL = {name: ((36, 36, 3), {"depth": 2}) if name.startswith("vit") else ((32, 32, 3), {})
         for name in BACKBONES.names()}
SMALL["iresnet"] = ((32, 32, 3), {"layers": [1, 1, 1, 1]})
# Counted above rather than run; the EfficientNetV2 sizes share one factory with b0 (only the
# keras.applications builder differs, checked in test_keras_application_builders_exist).
HEAVY = {"iresnet34", "iresnet50", "iresnet100", "iresnet200",
         "efficientnetv2_b1", "efficientnetv2_b2", "efficientnetv2_b3", "efficientnetv2_s"}


def weight_counts(model):
    moving = sum(int(np.prod(v.shape)) for v in model.weights if "moving_" in v.path)
    return model.count_params() - moving, moving


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_parameter_counts(name):
    keras.backend.clear_session()
    backbone = BACKBONES.build({"name": name}, input_shape=(112, 112, 3))
    neck = NECKS.build({"name": "gdc" if name == "mobilefacenet" else "e"}, embedding_dim=512)
    model = keras.Model(backbone.input, neck(backbone.output))  # symbolic: no forward pass
    assert weight_counts(model) == REFERENCE[name]
    assert backbone.output.shape[1:3] == (7, 7)
    if name.startswith("iresnet"):  # the fixed gamma is the only non-trainable weight
        trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
        assert trainable == REFERENCE[name][0] - 512


@pytest.mark.parametrize("name", sorted(n for n in SMALL if n not in HEAVY))
def test_builds_and_runs_small(name):
    shape, options = SMALL[name]
    backbone = BACKBONES.build({"name": name, **options}, input_shape=shape)
    x = np.random.default_rng(0).uniform(-1, 1, (2, *shape)).astype("float32")
    y = keras.ops.convert_to_numpy(backbone(x, training=False))
    assert y.shape[0] == 2 and y.ndim in (3, 4) and np.isfinite(y).all()
    assert tuple(backbone.output.shape[1:]) == y.shape[1:]


def test_stride2_block_equals_hand_computed_symmetric_padding():
    """The stride-2 conv pads 1 on every side (PyTorch), not Keras 'same' (0 before, 1 after)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 6, 6, 2)).astype("float32")
    block = iresnet_block(x.shape[1:], 3, stride=2, downsample=True)
    block(x)
    conv2 = block.get_layer("conv2")
    kernel = rng.normal(size=conv2.kernel.shape).astype("float32")
    conv2.kernel.assign(kernel)
    inner = rng.normal(size=(1, 6, 6, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(conv2(block.get_layer("conv2_pad")(inner)))
    padded = np.pad(inner, ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = np.zeros((1, 3, 3, 3), np.float32)
    for i in range(3):
        for j in range(3):
            patch = padded[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
            want[0, i, j] = np.einsum("hwc,hwco->o", patch, kernel)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    same = keras.layers.Conv2D(3, 3, strides=2, padding="same", use_bias=False)
    same.build(inner.shape)
    same.kernel.assign(kernel)
    assert not np.allclose(keras.ops.convert_to_numpy(same(inner)), want, atol=1e-3)


def test_block_output_is_residual_without_activation():
    x = np.random.default_rng(2).normal(size=(2, 5, 5, 4)).astype("float32")
    block = iresnet_block(x.shape[1:], 4, stride=1, downsample=False)
    block.get_layer("bn3").gamma.assign(np.zeros(4, np.float32))  # kill the residual branch
    block.get_layer("bn3").beta.assign(np.zeros(4, np.float32))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x, training=False)), x, atol=1e-6)


@pytest.mark.parametrize("name,options", [("tiny", {}), ("iresnet", {"layers": [1, 1, 1, 1]}),
                                          ("mobilefacenet", {}), ("vit_t", {"depth": 1}),
                                          ("mobilenetv3_small", {})])
def test_save_load_round_trip(name, options, tmp_path):
    shape = (36, 36, 3) if name.startswith("vit") else (32, 32, 3)
    model = BACKBONES.build({"name": name, **options}, input_shape=shape)
    x = np.random.default_rng(3).uniform(-1, 1, (2, *shape)).astype("float32")
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)),
                               keras.ops.convert_to_numpy(model(x, training=False)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,options", [
    ("tiny", {}), ("iresnet", {"layers": [1, 1, 1, 1], "widths": [8, 8, 16, 16], "stem_width": 8})])
def test_compiles_with_xla(name, options):
    backbone = BACKBONES.build({"name": name, **options}, input_shape=(32, 32, 3))
    model = keras.Model(backbone.input, NECKS.build({"name": "e"}, embedding_dim=16)(backbone.output))
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    x = np.random.default_rng(4).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    loss = model.train_on_batch(x, np.zeros((4, 16), np.float32))
    assert np.isfinite(loss)


def test_remat_gives_same_outputs_and_gradients():
    import tensorflow as tf

    x = np.random.default_rng(5).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    results = []
    for remat in (False, True):
        keras.utils.set_random_seed(0)
        model = BACKBONES.build({"name": "iresnet", "layers": [1, 1, 1, 1],
                                 "widths": [8, 8, 16, 16], "stem_width": 8, "remat": remat},
                                input_shape=(32, 32, 3))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=False) ** 2)
        grads = tape.gradient(loss, model.trainable_weights)
        results.append((float(loss), [g.numpy() for g in grads]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_keras_applications_reject_missing_weights_file():
    from trainer.registry import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        BACKBONES.build({"name": "resnet50", "weights": "/nonexistent.weights.h5"},
                        input_shape=(32, 32, 3))


def test_keras_application_builders_exist():
    from models.backbones import keras_apps

    for name in BACKBONES.names():
        factory = BACKBONES.get(name)
        if factory.__module__ == keras_apps.__name__:
            builder = factory.__doc__.split("keras.applications.")[1].split(" ")[0]
            assert callable(getattr(keras.applications, builder)), name
