"""Augmentation ops and pipelines: shape/dtype/range, per-sample draws, seeds, presets, mixing."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml

from augment.mixing import mix_loss
from augment.multiview import MultiView
from augment.pipeline import AugmentPipeline, build_augmentation
from trainer.registry import ConfigError

CONF = os.path.join(os.path.dirname(__file__), "..", "..", "conf", "augment")
SAME = np.tile(np.random.default_rng(0).uniform(0, 255, (1, 24, 24, 3)).astype("float32"),
               (6, 1, 1, 1))  # six copies of one image: any difference is the op's draw
DIFFERENT = np.random.default_rng(1).uniform(0, 255, (6, 24, 24, 3)).astype("float32")

# op node -> least number of distinct results on six identical inputs (continuous draws: 6;
# discrete ones such as 4 resolution levels or integer JPEG qualities may repeat a value)
OPS = {
    "flip": ({"name": "flip"}, 1),
    "random_resized_crop": ({"name": "random_resized_crop", "scale": [0.3, 1.0]}, 6),
    "gaussian_blur": ({"name": "gaussian_blur", "sigma": [0.5, 2.0]}, 6),
    "low_resolution": ({"name": "low_resolution", "levels": 4}, 2),
    "jpeg": ({"name": "jpeg", "quality": [20, 90]}, 3),
    "occlusion": ({"name": "occlusion"}, 6),
    "color_jitter": ({"name": "color_jitter", "brightness_factor": 0.3, "contrast_factor": 0.3}, 6),
    "random_rotation": ({"name": "random_rotation", "factor": 0.1}, 6),
    "rand_augment": ({"name": "rand_augment"}, 6),
}


def run(node, images=SAME, labels=None):
    pipeline = build_augmentation({"ops": [node] if isinstance(node, dict) else node, "seed": 7})
    out, out_labels = pipeline(images, np.arange(len(images)) if labels is None else labels)
    return np.asarray(out), out_labels


@pytest.mark.parametrize("op", sorted(OPS))
def test_shape_dtype_range_and_per_sample_draws(op):
    node, least_distinct = OPS[op]
    out, _ = run(node)
    assert out.shape == SAME.shape and out.dtype == np.float32
    assert out.min() >= -1e-3 and out.max() <= 255.0 + 1e-3
    distinct = len({o.tobytes() for o in out})
    assert distinct >= least_distinct and (least_distinct > 1 or distinct == 1)
    assert not np.allclose(out, SAME)


@pytest.mark.parametrize("op", ["random_resized_crop", "occlusion", "low_resolution", "jpeg"])
def test_same_seed_repeats_inside_tf_data(op):
    def draw():
        pipeline = build_augmentation({"ops": [OPS[op][0]], "seed": 3})
        ds = tf.data.Dataset.from_tensors((DIFFERENT, np.arange(6))).repeat(2).map(pipeline)
        return [a.numpy() for a, _ in ds]

    first, second = draw(), draw()
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.allclose(first[0], first[1])  # the stream moves on between batches


def test_probability_gates_each_sample():
    images = np.repeat(DIFFERENT, 50, axis=0)
    out, _ = run({"name": "flip", "p": 0.5}, images)
    flipped = np.array([np.allclose(o, i[:, ::-1]) and not np.allclose(o, i)
                        for o, i in zip(out, images)])
    assert 0.35 < flipped.mean() < 0.65
    out, _ = run({"name": "flip", "p": 0.0}, images)
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONF, "*.yaml"))))
def test_presets_compose_and_run_in_tf_data(path):
    node = yaml.safe_load(open(path))
    pipeline = build_augmentation(node)
    if not node["ops"]:
        assert pipeline is None
        return
    ds = tf.data.Dataset.from_tensors((DIFFERENT, np.arange(6))).map(pipeline)
    images, labels = next(iter(ds))
    if isinstance(labels, dict):  # mixup / cutmix presets: the mixed-label dict (augment.mixing)
        assert {k: v.shape for k, v in labels.items()} == {
            "labels": (6,), "mix_labels": (6,), "mix_weight": (6,)}
        labels = labels["labels"]
    views = node.get("num_views", 1)
    assert images.shape == (6 * views, 24, 24, 3) and labels.shape == (6 * views,)


def test_multiview_layout_rows_i_and_i_plus_b():
    views = build_augmentation({"ops": [{"name": "occlusion"}], "num_views": 2, "seed": 1})
    assert isinstance(views, MultiView) and views.num_views == 2
    images, labels = views(DIFFERENT, np.arange(6))
    images = np.asarray(images)
    np.testing.assert_array_equal(np.asarray(labels), np.r_[np.arange(6), np.arange(6)])
    assert not np.allclose(images[:6], images[6:])  # views drawn independently
    # Each view differs from its own source only where the occluder was painted.
    for i in range(6):
        for view in (images[i], images[i + 6]):
            assert np.isclose(view, DIFFERENT[i]).mean() > 0.3


@pytest.mark.parametrize("op", ["mixup", "cutmix"])
def test_mixing_returns_paired_integer_labels(op):
    labels = np.arange(6, dtype=np.int32)
    out, mixed = run({"name": op, "alpha": 1.0}, DIFFERENT, labels)
    assert set(mixed) == {"labels", "mix_labels", "mix_weight"}
    weight = np.asarray(mixed["mix_weight"])
    partner = np.asarray(mixed["mix_labels"])
    np.testing.assert_array_equal(np.asarray(mixed["labels"]), labels)
    assert ((weight >= 0) & (weight <= 1)).all()
    for i in range(6):  # image = w * own + (1 - w) * partner (pixelwise for cutmix)
        own, other = DIFFERENT[i], DIFFERENT[partner[i]]
        if op == "mixup":
            np.testing.assert_allclose(out[i], weight[i] * own + (1 - weight[i]) * other,
                                       rtol=1e-4, atol=1e-2)
        elif partner[i] != i:  # a sample paired with itself is unchanged whatever its weight
            kept = np.isclose(out[i], own).all(-1).mean()
            assert abs(kept - weight[i]) < 0.1
    per_sample = mix_loss(lambda y, p: np.asarray(y, np.float32), mixed, None)
    np.testing.assert_allclose(per_sample, weight * labels + (1 - weight) * partner, rtol=1e-5)


def test_mixing_with_p_zero_keeps_labels():
    _, mixed = run({"name": "mixup", "p": 0.0}, DIFFERENT, np.arange(6))
    np.testing.assert_array_equal(np.asarray(mixed["mix_labels"]), np.arange(6))
    np.testing.assert_array_equal(np.asarray(mixed["mix_weight"]), 1.0)


def test_dotted_keras_layer_and_errors():
    out, _ = run({"name": "keras.layers.RandomRotation", "factor": 0.1})
    assert out.shape == SAME.shape
    with pytest.raises(ConfigError, match="no parameter"):
        build_augmentation({"ops": [{"name": "occlusion", "colour": 1}]})
    with pytest.raises(ConfigError, match="unknown augment"):
        build_augmentation({"ops": [{"name": "flipp"}]})
    with pytest.raises(ConfigError, match="at most one"):
        build_augmentation({"ops": [{"name": "mixup"}, {"name": "cutmix"}]})
    with pytest.raises(ConfigError, match="multi-view"):
        build_augmentation({"ops": [{"name": "mixup"}], "num_views": 2})
    with pytest.raises(ConfigError, match="no key"):
        build_augmentation({"ops": [], "sed": 1})
    assert isinstance(build_augmentation({"ops": ["flip"]}), AugmentPipeline)


@pytest.mark.parametrize("op", ["occlusion", "low_resolution", "gaussian_blur", "cutmix"])
def test_layer_config_round_trip(op):
    import keras

    from trainer.registry import AUGMENTS

    layer = AUGMENTS.build({"name": op}, seed=5)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    np.testing.assert_allclose(np.asarray(clone(DIFFERENT)), np.asarray(layer(DIFFERENT)), atol=1e-4)
