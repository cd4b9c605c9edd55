"""MixUp / CutMix in the supervised loop: per-sample weighted loss of the two targets, one
state update per step for stateful losses, and the mixup preset end to end."""

import json

import keras
import numpy as np
import pytest

from trainer.registry import LOOPS, LOSSES

CLASSES = 5
rng = np.random.default_rng(0)
COS = rng.uniform(-0.5, 0.9, (4, CLASSES)).astype("float32")
NORM = rng.uniform(5.0, 30.0, (4, 1)).astype("float32")
LABELS = np.array([0, 1, 2, 3], np.int32)
PARTNERS = np.array([2, 1, 4, 0], np.int32)
WEIGHT = np.array([0.3, 1.0, 0.6, 0.9], np.float32)
MIXED = {"labels": LABELS, "mix_labels": PARTNERS, "mix_weight": WEIGHT}


def supervised_loop(loss):
    images = keras.Input((8, 8, 3))
    embedding_model = keras.Model(images, keras.layers.Dense(4)(keras.layers.Flatten()(images)))
    return LOOPS.build({"name": "supervised"}, embedding_model=embedding_model, head=None,
                       loss=loss, num_classes=CLASSES)


def state_of(loss):
    return [float(keras.ops.convert_to_numpy(v)) for v in loss.state_layer.variables]


@pytest.mark.parametrize("name", ["arcface", "curricularface", "adaface"])
def test_mixed_loss_is_weighted_per_sample_and_state_updates_once(name):
    """w·L(y_a) + (1 − w)·L(y_b), both from the pre-step state; the state ends as after L(y_a)."""
    y_pred = {"cos": COS, "norm": NORM}
    loop = supervised_loop(LOSSES.build({"name": name}, num_classes=CLASSES))
    got = float(keras.ops.convert_to_numpy(loop.compute_loss(y=MIXED, y_pred=y_pred)))

    own, partner = (LOSSES.build({"name": name}, num_classes=CLASSES) for _ in range(2))
    first = keras.ops.convert_to_numpy(own.call(LABELS, y_pred))
    second = keras.ops.convert_to_numpy(partner.call(PARTNERS, y_pred))
    assert got == pytest.approx(float(np.mean(WEIGHT * first + (1 - WEIGHT) * second)), rel=1e-5)
    if own.state_layer is not None:
        assert state_of(loop.face_loss) == pytest.approx(state_of(own), rel=1e-6)
        twice = LOSSES.build({"name": name}, num_classes=CLASSES)
        twice.call(LABELS, y_pred), twice.call(PARTNERS, y_pred)
        assert state_of(loop.face_loss) != pytest.approx(state_of(twice), rel=1e-6)

    plain = supervised_loop(LOSSES.build({"name": name}, num_classes=CLASSES))
    unmixed = {**MIXED, "mix_weight": np.ones(4, np.float32)}
    assert float(keras.ops.convert_to_numpy(plain.compute_loss(y=unmixed, y_pred=y_pred))) == \
        pytest.approx(float(np.mean(first)), rel=1e-5)


@pytest.mark.e2e
def test_mixup_preset_smoke(run_cli, tmp_path):
    done = run_cli("augment=mixup", "debug=smoke", "loss=curricularface", "run.name=mixup")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "mixup" / "metrics.json").read_text())
    assert metrics["status"] == "finished" and np.isfinite(metrics["epochs"][0]["loss"])
