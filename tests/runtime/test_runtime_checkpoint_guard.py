"""Checkpoints (also on remote file systems) and the non-finite guard, in process."""

import json

import keras
import numpy as np
import pytest

from trainer import io
from trainer.callbacks.checkpoint import Checkpoint, latest_checkpoint
from trainer.callbacks.nan_guard import NanGuard


def tiny_model(optimizer=None, guard=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = optimizer or keras.optimizers.SGD(0.05)
    if guard is not None:
        optimizer = guard.prepare_optimizer(optimizer)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=True)
    return model


def batches(nan_batch=None, count=4):
    rng = np.random.default_rng(1)
    data = [(rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 2)).astype("float32"))
            for _ in range(count)]
    if nan_batch is not None:
        data[nan_batch][0][0, 0] = np.nan
    return data


def fit(model, data, callbacks=()):
    for callback in callbacks:
        callback.set_position(len(data), 0)
    model.fit((b for b in data), epochs=1, steps_per_epoch=len(data), callbacks=list(callbacks),
              verbose=0, shuffle=False)


def test_checkpoints_on_a_remote_file_system_round_trip():
    run_dir = "ram://facetrain-test/run"
    model = tiny_model()
    checkpoint = Checkpoint(run_dir, every_steps=2, keep=1)
    checkpoint.check_compatible(steps_per_epoch=4, batch_size=4)
    fit(model, batches(), [checkpoint])
    latest = latest_checkpoint(run_dir)
    assert (latest["epoch"], latest["batch"], latest["step"], latest["optimizer_step"]) == (1, 0, 4, 4)
    assert sorted(io.listdir(io.join(run_dir, "checkpoints"))) == [  # keep=1: step 2 pruned with its position
        "ckpt-000000004.json", "ckpt-000000004.weights.h5", "latest.json"]

    restored = tiny_model()
    restored.optimizer.build(restored.trainable_variables)
    io.load_file(io.join(run_dir, "checkpoints", latest["file"]), restored.load_weights)
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(restored.optimizer.iterations) == 4


def test_mid_epoch_checkpoint_records_the_batch(tmp_path):
    checkpoint = Checkpoint(str(tmp_path), every_steps=3, keep=5)
    checkpoint.check_compatible(steps_per_epoch=4, batch_size=4)
    model = tiny_model()
    fit(model, batches(), [checkpoint])
    saved = sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*.h5"))
    assert saved == ["ckpt-000000003.weights.h5", "ckpt-000000004.weights.h5"]
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["epoch"] == 1


def test_skip_mode_drops_exactly_the_bad_update(tmp_path, capsys):
    guard = NanGuard(str(tmp_path), on_nan="skip", max_skips=3)
    model = tiny_model(guard=guard)
    fit(model, batches(nan_batch=2), [guard])
    assert guard.skipped == [3] and guard.error is None
    assert "step 3" in capsys.readouterr().out

    reference = tiny_model()  # plain SGD on the same batches without the bad one
    fit(reference, [b for i, b in enumerate(batches()) if i != 2])
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)


def test_skip_mode_stops_after_max_skips(tmp_path):
    guard = NanGuard(str(tmp_path), on_nan="skip", max_skips=1)
    data = batches(nan_batch=1)
    data[3][0][0, 0] = np.inf
    fit(tiny_model(guard=guard), data, [guard])
    assert guard.skipped == [2, 4]
    assert "more than callbacks.nan_guard.max_skips=1" in guard.error


def test_stop_mode_names_step_loss_and_last_checkpoint(tmp_path):
    checkpoint = Checkpoint(str(tmp_path), every_steps=1)
    checkpoint.check_compatible(steps_per_epoch=4, batch_size=4)
    guard = NanGuard(str(tmp_path))
    fit(tiny_model(), batches(nan_batch=2), [guard, checkpoint])  # guard first, as the trainer orders them
    assert "loss became nan at step 3" in guard.error
    assert "ckpt-000000002.weights.h5 (step 2)" in guard.error
    assert latest_checkpoint(str(tmp_path))["step"] == 2  # nothing saved after the bad step


def test_unknown_on_nan_is_a_config_error(tmp_path):
    from trainer.registry import ConfigError

    with pytest.raises(ConfigError, match="on_nan"):
        NanGuard(str(tmp_path), on_nan="ignore")
