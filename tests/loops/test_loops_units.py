"""P×K sampler, loop construction errors, config round-trip and the BCT preset end to end."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from trainer.registry import ConfigError, HEADS, LOOPS, LOSSES


class TinySource:
    """6 identities with uneven image counts (2..7), 8x8 images whose pixels encode the label."""

    image_size, num_classes, fits_in_memory, in_memory = 8, 6, True, False

    def __init__(self):
        self.labels = np.concatenate([[c] * (c + 2) for c in range(6)]).astype(np.int32)
        self.num_examples = len(self.labels)

    def train(self):
        images = np.repeat(self.labels[:, None, None, None], 8 * 8 * 3, axis=1).reshape(-1, 8, 8, 3)
        return tf.data.Dataset.from_tensor_slices((images.astype(np.uint8), self.labels))


def test_pk_batches_hold_p_identities_times_k_images():
    from trainer.data.samplers import class_balanced_batches

    batches = list(class_balanced_batches(TinySource(), batch_size=6, images_per_identity=3,
                                          seed=1, steps_per_epoch=4, epochs=2).as_numpy_iterator())
    assert len(batches) == 8
    for images, labels in batches:
        assert images.shape == (6, 8, 8, 3) and images.dtype == np.float32
        assert (images[:, 0, 0, 0] == labels).all()  # images travel with their labels
        groups = labels.reshape(2, 3)
        assert (groups == groups[:, :1]).all()  # K consecutive rows share an identity
        assert set(labels) <= {1, 2, 3, 4, 5}  # identity 0 has 2 < K images: never sampled


def test_pk_sampler_is_seeded_per_epoch():
    from trainer.data.samplers import class_balanced_batches

    def labels(seed, start_epoch=0):
        return [b[1].tolist() for b in class_balanced_batches(
            TinySource(), 6, 3, seed, 3, 2, start_epoch=start_epoch).as_numpy_iterator()]

    assert labels(0) == labels(0)
    assert labels(0)[3:] == labels(0, start_epoch=1)  # resuming at epoch 1 replays epoch 1


@pytest.mark.parametrize("batch_size,k,fragment", [(7, 3, "not a multiple"), (6, 1, "K >= 2"),
                                                   (3, 3, "one identity")])
def test_pk_sampler_rejects_bad_shapes(batch_size, k, fragment):
    from trainer.data.samplers import identities_per_batch

    with pytest.raises(ConfigError, match=fragment):
        identities_per_batch(batch_size, k)


def tiny_embedding_model():
    import keras

    images = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(images))
    return keras.Model(images, keras.layers.Dense(8)(x))


@pytest.mark.parametrize("node,fragment", [
    ({"name": "bct"}, "loop.old_model is not set"),
    ({"name": "bct", "old_model": "no/such/embedding.keras"}, "does not exist"),
    ({"name": "distill"}, "loop.teacher is not set"),
])
def test_reference_model_path_errors_are_one_line(node, fragment):
    with pytest.raises(ConfigError, match=fragment) as error:
        LOOPS.build(node, embedding_model=tiny_embedding_model(),
                    head=HEADS.build({"name": "cosine"}, num_classes=3),
                    loss=LOSSES.build({"name": "arcface"}, num_classes=3), num_classes=3)
    assert "\n" not in str(error.value)


def test_wrong_loss_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="loss=ntxent"):
        LOOPS.build({"name": "simclr"}, embedding_model=tiny_embedding_model(), head=None,
                    loss=LOSSES.build({"name": "arcface"}, num_classes=3))
    with pytest.raises(ConfigError, match="loss on embeddings"):
        LOOPS.build({"name": "pair"}, embedding_model=tiny_embedding_model(),
                    loss=LOSSES.build({"name": "ntxent"}))


def test_simclr_needs_two_views():
    loop = LOOPS.build({"name": "simclr"}, embedding_model=tiny_embedding_model(), head=None,
                       loss=LOSSES.build({"name": "ntxent"}))
    with pytest.raises(ConfigError, match="augment=simclr"):
        loop.batch_needs(None)


def test_loop_config_round_trips():
    import keras

    loop = LOOPS.build({"name": "pair", "images_per_identity": 5},
                       embedding_model=tiny_embedding_model(), loss=LOSSES.build({"name": "triplet"}))
    config = loop.get_config()
    clone = type(loop).from_config(json.loads(json.dumps(config)))
    assert clone.images_per_identity == 5
    assert clone.face_loss.get_config() == loop.face_loss.get_config()
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    loop(x)
    clone(x)
    clone.set_weights(loop.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)),
                               keras.ops.convert_to_numpy(loop(x)), rtol=1e-6)


def test_projector_head_shapes_and_config():
    head = HEADS.build({"name": "projector", "hidden_dim": 16, "output_dim": 4})
    out = head(np.ones((3, 8), "float32"), training=True)
    import keras

    assert tuple(out.shape) == (3, 4) and keras.backend.standardize_dtype(out.dtype) == "float32"
    assert type(head).from_config(head.get_config()).get_config() == head.get_config()


@pytest.mark.e2e
def test_bct_preset_smoke_reports_cross_model_accuracy(run_cli, tmp_path):
    """The default job exports an old model; the BCT preset trains against it and reports."""
    done = run_cli("debug=smoke", "run.name=old", "eval.pairs=32")
    assert done.returncode == 0, done.stderr[-2000:]
    old = tmp_path / "runs" / "old" / "export" / "embedding.keras"
    missing = run_cli("experiment=bct", "debug=smoke", "run.name=missing")
    assert missing.returncode == 2 and "loop.old_model is not set" in missing.stderr
    done = run_cli("experiment=bct", "debug=smoke", "run.name=bct", f"loop.old_model={old}",
                   "loop.evaluation_pairs=64", "eval.pairs=32")
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "runs" / "bct" / "metrics.json").read_text())
    epoch = metrics["epochs"][-1]
    for key in ("bct_cross_accuracy", "bct_new_accuracy", "bct_old_accuracy"):
        assert 0.0 <= epoch[key] <= 1.0
    assert os.path.exists(tmp_path / "runs" / "bct" / "export" / "embedding.keras")
