"""Partial FC: exact against the full cosine head (8 devices, both backends), sampling, losses, resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import keras
import pytest

import trainer
from models.heads.partial_fc import sample_rows
from trainer.registry import ConfigError

WORKER = Path(__file__).with_name("partial_fc_worker.py")
ROOT = Path(__file__).resolve().parents[2]
TARGET_ONLY = ["arcface", "cosface", "combined", "subcenter_arcface", "curricularface", "magface",
               "adaface", "elasticface_arc", "elasticface_cos", "normface"]


def run_worker(backend, arguments):
    env = {**os.environ, "KERAS_BACKEND": backend}
    if backend == "jax":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    done = subprocess.run([sys.executable, str(WORKER), *arguments], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_sample_rate_one_on_8_devices_equals_the_full_head_on_one(backend):
    results = run_worker(backend, ["arcface", "cosface", "adaface"])
    assert [r["loss"] for r in results] == ["arcface", "cosface", "adaface"]
    for r in results:
        assert abs(r["loss_sharded"] - r["loss_ref"]) <= 1e-5 * abs(r["loss_ref"]), r
        # embedding kernel, embedding bias, class centres
        assert max(r["grad_rel_errors"]) <= 1e-5, r
        assert r["padding_grad"] == 0.0, r
        assert r["shard_rows"] == [13], r  # the centres are stored split: 104 rows, 13 per device


@pytest.mark.e2e
@pytest.mark.parametrize("optimizer, bound", [("sgd", 1e-5), ("adamw", 1e-4)])
def test_the_heads_own_row_updates_on_8_replicas_equal_the_keras_optimizer_on_one(optimizer, bound):
    """TensorFlow: each replica updates its own rows (momentum or Adam slots, weight decay)
    exactly as Keras's optimizer updates the full cosine head. Adam's bound is looser: its
    step g / (|g| + 1e-7) turns float32 noise in near-zero gradients into 1e-5 of the step."""
    [result] = run_worker("tensorflow", ["--train", optimizer])
    assert result["loss_sharded"] == pytest.approx(result["loss_ref"], rel=1e-6), result
    assert result["centre_update_error"] <= bound, result
    assert result["kernel_update_error"] <= bound, result
    assert result["steps"] == 3 and result["shard_rows"] == [13], result
    assert result["slots"] == (["momentum"] if optimizer == "sgd" else ["m", "v"])
    # the initial matrix is drawn per block of rows: the same on 1 device and on 8 replicas,
    # with Glorot's spread for a (16, 104) matrix: sqrt(2 / 120) = 0.129
    assert result["same_start_on_1_and_8"], result
    assert result["initial_std"] == pytest.approx((2 / (16 + 104)) ** 0.5, rel=0.1), result
    slots = len(result["slots"])  # what trainer.bench reports: 13 rows of 16 floats, weights + slots
    assert result["memory"] == {"devices": 8, "rows_per_device": 13, "optimizer_slots": slots,
                                "bytes_per_device": 13 * 16 * 4 * (1 + slots)}


def build_pair(loss_name, num_classes=40, dim=8, batch=12, shard_multiple=8, sample_rate=1.0):
    loss_a = trainer.build("loss", {"name": loss_name}, num_classes=num_classes)
    loss_b = trainer.build("loss", {"name": loss_name}, num_classes=num_classes)
    need = loss_a.head_requirements()
    partial = trainer.build("head", {"name": "partial_fc", "shard_multiple": shard_multiple,
                                     "sample_rate": sample_rate, **need}, num_classes=num_classes)
    cosine = trainer.build("head", {"name": "cosine", **need}, num_classes=num_classes)
    cosine.build((batch, dim))
    partial.build((batch, dim))
    k = cosine.sub_centers
    kernel = keras.ops.convert_to_numpy(cosine.kernel).reshape(dim, num_classes, k).transpose(1, 2, 0)
    centres = np.random.default_rng(1).normal(size=partial.whole_centers().shape).astype("float32")
    centres[:num_classes] = kernel
    partial.assign_whole_centers(centres)
    return loss_a, loss_b, partial, cosine


@pytest.mark.parametrize("loss_name", TARGET_ONLY)
def test_every_target_logit_loss_matches_the_cosine_head_per_sample(loss_name):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(12, 8)) * 5).astype("float32")
    y = rng.integers(0, 40, 12).astype("int32")
    loss_a, loss_b, partial, cosine = build_pair(loss_name)
    got = keras.ops.convert_to_numpy(partial.per_sample_loss(loss_a, x, y, training=True))
    expected = keras.ops.convert_to_numpy(loss_b.call(y, cosine(x)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_every_positive_is_kept_and_the_sample_is_a_function_of_seed_and_step():
    rng = np.random.default_rng(0)
    classes, shards, per_shard, kept = 1000, 4, 256, 40  # 1024 rows, 24 of them padding
    labels = rng.integers(0, classes, 32).astype("int32")
    ids = np.arange(shards, dtype="int32")
    draws = {}
    for step in range(6):
        rows = keras.ops.convert_to_numpy(sample_rows(labels, ids, per_shard, kept, classes, 7, step))
        assert rows.shape == (shards, kept)
        for shard in range(shards):
            owned = rows[shard]
            assert len(set(owned)) == kept
            assert np.all((owned >= shard * per_shard) & (owned < (shard + 1) * per_shard))
            assert np.all(owned < classes)  # padding rows only when nothing else is left
        assert set(labels) <= set(rows.ravel())  # every positive, every step
        again = keras.ops.convert_to_numpy(sample_rows(labels, ids, per_shard, kept, classes, 7, step))
        np.testing.assert_array_equal(np.sort(rows), np.sort(again))
        draws[step] = {tuple(np.sort(r)) for r in rows}
    assert len({frozenset(d) for d in draws.values()}) == 6  # a new sample each step
    other_seed = keras.ops.convert_to_numpy(sample_rows(labels, ids, per_shard, kept, classes, 8, 0))
    assert {tuple(np.sort(r)) for r in other_seed} != draws[0]
    # One shard of four computed alone (a tf.distribute replica) draws what it draws among all four.
    alone = keras.ops.convert_to_numpy(sample_rows(labels, ids[2:3], per_shard, kept, classes, 7, 5))
    together = keras.ops.convert_to_numpy(sample_rows(labels, ids, per_shard, kept, classes, 7, 5))
    np.testing.assert_array_equal(np.sort(alone[0]), np.sort(together[2]))


def test_sampled_step_trains_only_sampled_rows_and_advances_the_sample():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(12, 8)) * 5).astype("float32")
    y = rng.integers(0, 200, 12).astype("int32")
    loss = trainer.build("loss", {"name": "arcface"}, num_classes=200)
    head = trainer.build("head", {"name": "partial_fc", "shard_multiple": 8, "sample_rate": 0.1},
                         num_classes=200)
    inputs = keras.Input((8,))
    loop = trainer.build("loop", "supervised", embedding_model=keras.Model(inputs, inputs), head=head,
                         loss=loss)
    loop.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9), jit_compile=False)
    loop(x)
    assert head.num_sampled(200, 12) == 20  # 10 % of 200 rows, and at least the batch size
    touched = []
    for step in range(2):
        weights, momentum = head.whole_centers(), np.array(head.row_state.slots["momentum"].value.numpy())
        loop.train_on_batch(x, y)
        # A row counts as touched if its weights or its momentum moved (a tiny step can vanish
        # in float32 rounding of the weight, never in the momentum it starts from zero).
        moved = (np.abs(head.whole_centers() - weights).sum(axis=(1, 2)) > 0) | \
            (np.abs(head.row_state.slots["momentum"].value.numpy() - momentum).sum(axis=(1, 2)) > 0)
        rows = set(np.flatnonzero(moved))
        assert set(y) <= rows and len(rows) <= 20  # every positive; nothing beyond the sample
        touched.append(rows)
        assert int(keras.ops.convert_to_numpy(head.sample_step)) == step + 1
    assert touched[0] != touched[1]


def test_the_head_round_trips_its_config_and_weights(tmp_path):
    _, _, head, _ = build_pair("arcface")
    head.sample_step.assign(17)
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert revived.get_config() == head.get_config()
    if not revived.built:  # Keras rebuilds a revived layer from its build config
        revived.build((12, 8))
    revived.set_weights(head.get_weights())
    np.testing.assert_array_equal(revived.whole_centers(), head.whole_centers())
    assert int(keras.ops.convert_to_numpy(revived.sample_step)) == 17
    assert tuple(head.centers.shape) == (40, 1, 8)  # 40 classes: already a multiple of 8


@pytest.mark.parametrize("loss, words", [("adacos", "logit_scale"), ("contrastive", "not a margin loss")])
def test_losses_that_need_every_class_fail_when_the_job_is_built(loss, words):
    from trainer.builders import build_head

    cfg = trainer.compose(["head=partial_fc", f"loss={loss}"])
    with pytest.raises(ConfigError) as error:
        build_head(cfg, trainer.build("loss", cfg.loss, num_classes=10), 10)
    message = str(error.value)
    assert "\n" not in message and "head=partial_fc" in message and words in message


def test_other_loops_are_refused():
    from trainer.builders import build_head

    cfg = trainer.compose(["head=partial_fc", "loss=arcface", "loop=pair"])
    with pytest.raises(ConfigError, match="loop=supervised only"):
        build_head(cfg, trainer.build("loss", cfg.loss, num_classes=10), 10)


def run_job(tmp_path, name, *overrides):
    command = [sys.executable, "-m", "trainer", "head=partial_fc", "head.sample_rate=0.5",
               "head.shard_multiple=8", "runtime.jit_compile=false", "debug=smoke", "logger=none",
               "eval.pairs=20", "neck.embedding_dim=32", f"run.dir={tmp_path / name}", *overrides]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.e2e
def test_trains_on_2_logical_devices_and_resumes_on_1(tmp_path):
    """The centres' shape does not depend on the device count: a 2-device checkpoint resumes on 1."""
    run_job(tmp_path, "two", "runtime.logical_devices=2")
    first = tmp_path / "two" / "checkpoints" / "ckpt-000000003.weights.h5"
    assert first.exists()
    out = run_job(tmp_path, "one", "trainer.epochs=2", f"trainer.resume={tmp_path / 'two'}")
    assert "resumed from" in out and "step 3" in out
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["status"] == "finished"
    import h5py

    def head_arrays(path):
        found = {}

        def keep(name, obj):  # returns None: visititems stops at the first other value
            if isinstance(obj, h5py.Dataset) and name.startswith("head/"):
                found[name] = np.asarray(obj)

        with h5py.File(path) as f:
            f.visititems(keep)
        return found

    before, after = head_arrays(first), head_arrays(tmp_path / "one" / "checkpoints" / "ckpt-000000006.weights.h5")
    counters = [k for k in before if before[k].shape == ()]  # the head's sample step
    # the whole centre matrix and its AdamW slots, whatever the device count
    assert sorted(k.rsplit("/", 1)[-1] for k in before if k not in counters) == ["0", "slot_m", "slot_v"]
    assert {before[k].shape for k in before if k not in counters} == {(600, 1, 32)}
    assert counters and all(int(before[k]) == 3 and int(after[k]) == 6 for k in counters)


def test_a_sampled_head_refuses_batches_of_unknown_size_instead_of_keeping_every_row():
    """An unknown batch size would make the sample size unknown; silently keeping every row would
    cost the full head's time and memory, so it is one clear error instead."""
    import tensorflow as tf

    loss, _, head, _ = build_pair("arcface", num_classes=200, sample_rate=0.1)
    step = tf.function(lambda x, y: head.per_sample_loss(loss, x, y, training=True),
                       input_signature=[tf.TensorSpec((None, 8)), tf.TensorSpec((None,), tf.int32)])
    with pytest.raises(ValueError, match="drop_remainder=True"):
        step(np.zeros((12, 8), "float32"), np.zeros((12,), "int32"))


def test_a_loss_scaled_step_updates_the_rows_as_the_unscaled_one():
    """mixed_float16's LossScaleOptimizer scales the loss; the head unscales its rows' gradient,
    so two steps give the rows (and their momentum) of plain SGD; a non-finite step is skipped."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(12, 8)) * 5).astype("float32")
    y = rng.integers(0, 40, 12).astype("int32")
    heads = []
    for wrap in (False, True):
        loss = trainer.build("loss", {"name": "arcface"}, num_classes=40)
        head = trainer.build("head", {"name": "partial_fc", "shard_multiple": 8}, num_classes=40)
        inputs = keras.Input((8,))
        loop = trainer.build("loop", "supervised", embedding_model=keras.Model(inputs, inputs), head=head,
                             loss=loss)
        sgd = keras.optimizers.SGD(0.5, momentum=0.9)
        loop.compile(optimizer=keras.optimizers.LossScaleOptimizer(sgd) if wrap else sgd, jit_compile=False)
        head.assign_whole_centers(np.random.default_rng(1).normal(size=(40, 1, 8)).astype("float32"))
        for _ in range(2):
            loop.train_on_batch(x, y)
        if wrap:
            assert float(keras.ops.convert_to_numpy(loop.optimizer.dynamic_scale)) > 1.0  # really scaled
            before = head.whole_centers()
            loop.train_on_batch(np.full_like(x, np.nan), y)  # a non-finite step: nothing moves
            np.testing.assert_array_equal(head.whole_centers(), before)
        heads.append(head)
    plain, scaled = heads
    np.testing.assert_allclose(scaled.whole_centers(), plain.whole_centers(), rtol=1e-5, atol=1e-6)


def test_mixup_with_the_head_is_refused_before_any_data_is_read():
    from trainer.builders import build_loop
    from trainer.job import augmentation

    cfg = trainer.compose(["head=partial_fc", "loss=arcface", "augment=mixup", "debug=smoke"])
    loop = build_loop(cfg, num_classes=10, image_size=32)
    with pytest.raises(ConfigError, match="needs one label per image"):
        loop.batch_needs(augmentation(cfg))
