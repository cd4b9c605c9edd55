"""Numerical edges of the class-label losses: bad labels, label dtypes, gradients at cos = +-1,
and combined margin's two continuations past pi (against float64 formulas written here)."""

import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import trainer
from losses.margin import MAX_ANGLE_SLOPE, MarginBatch, target_angle
from trainer.registry import LOSSES, ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
C = 5
DETERMINISTIC = {"elasticface_arc": {"sigma": 0.0}, "elasticface_cos": {"sigma": 0.0}}


def class_label_losses():
    """Every registered loss whose labels index classes (plugins included)."""
    return [n for n in LOSSES.names()
            if getattr(LOSSES.build({"name": n}, num_classes=C), "input_kind", "") in ("cosines", "cosines_and_norm")]


MARGIN_LOSSES = class_label_losses()


def build(name, **params):
    return trainer.build("loss", {"name": name, **DETERMINISTIC.get(name, {}), **params}, num_classes=C)


def head(cos, norm=None, dtype="float32"):
    cos = np.asarray(cos, np.float32)
    norm = np.full((len(cos), 1), 30.0, np.float32) if norm is None else norm
    return {"cos": tf.constant(cos, dtype), "norm": tf.constant(norm, dtype)}


def test_margin_losses_are_found():
    assert {"arcface", "cosface", "combined", "adaface", "curricularface", "magface", "adacos",
            "normface", "subcenter_arcface", "elasticface_arc", "elasticface_cos"} <= set(MARGIN_LOSSES)


# -- 1. labels out of range ------------------------------------------------------------------
def test_issue_reproducer_raises_instead_of_a_negative_loss():
    """Label 5 with 5 classes used to give -1.59 (logsumexp over no target)."""
    loss = trainer.build("loss", {"name": "arcface"})
    with pytest.raises(ValueError) as caught:
        loss.call(np.array([5]), np.full((1, 5), -0.05, "float32"))
    assert str(caught.value) == ("loss 'arcface': label 5 (sample 0, 1 bad in the batch) is out of range for "
                                 "5 classes; labels must be integers in [0, 4]")


@pytest.mark.parametrize("bad", [C, -1, 1000, np.float32(2.5)])
@pytest.mark.parametrize("name", MARGIN_LOSSES)
def test_eager_bad_label_is_one_clear_line(name, bad):
    labels = np.array([0, 1, bad, 3], dtype=np.asarray(bad).dtype if isinstance(bad, np.floating) else "int32")
    cos = np.random.default_rng(0).uniform(-0.5, 0.5, (4, C))
    with pytest.raises(ValueError) as caught:
        build(name)(labels, head(cos))
    message = str(caught.value)
    assert "\n" not in message and f"loss '{name}'" in message and "sample 2" in message
    if isinstance(bad, np.floating):
        assert "label 2.5" in message and "not a whole number" in message
    else:
        assert f"label {bad} " in message and f"for {C} classes" in message


def compiled_value_and_grad(loss, labels, cos, jit_compile=True):
    @tf.function(jit_compile=jit_compile)
    def step(y, c):
        with tf.GradientTape() as tape:
            tape.watch(c)
            value = loss.call(y, {"cos": c, "norm": tf.fill([tf.shape(c)[0], 1], 30.0)})
            total = tf.reduce_sum(value)
        return value, tape.gradient(total, c)

    value, grad = step(tf.constant(labels), tf.constant(cos, tf.float32))
    return value.numpy(), grad.numpy()


@pytest.mark.parametrize("jit_compile", [True, False], ids=["xla", "graph"])
@pytest.mark.parametrize("name", MARGIN_LOSSES)
def test_compiled_bad_label_makes_its_row_nan_in_value_and_gradient(name, jit_compile):
    """Compiled, labels are run-time inputs: the row is NaN so the NaN guard (stop: loss,
    skip: gradients) catches the step; the other rows are untouched."""
    cos = np.random.default_rng(1).uniform(-0.5, 0.5, (4, C)).astype("float32")
    good = np.array([0, 1, 2, 3], "int32")
    reference, reference_grad = compiled_value_and_grad(build(name), good, cos, jit_compile)
    assert np.all(np.isfinite(reference)) and np.all(np.isfinite(reference_grad))
    for bad in (C, -1, 2**31 - 1):
        labels = good.copy()
        labels[2] = bad
        value, grad = compiled_value_and_grad(build(name), labels, cos, jit_compile)
        assert np.isnan(value[2]) and np.all(np.isnan(grad[2])), (bad, value, grad)
        if name not in ("adacos", "curricularface"):  # their batch statistics include row 2's label
            np.testing.assert_allclose(value[[0, 1, 3]], reference[[0, 1, 3]], rtol=1e-6)


def test_int64_labels_are_range_checked_before_the_int32_cast():
    """2**32 + 1 would wrap to class 1 if it were cast first."""
    loss = build("cosface")
    with pytest.raises(ValueError, match=f"label {2**32 + 1} "):
        loss(np.array([0, 2**32 + 1], "int64"), head(np.zeros((2, C))))
    value, _ = compiled_value_and_grad(build("cosface"), np.array([0, 2**32 + 1], "int64"), np.zeros((2, C)))
    assert np.isfinite(value[0]) and np.isnan(value[1])


@pytest.mark.parametrize("name,variable", [("curricularface", "t"), ("adacos", "scale")])
def test_bad_labels_leave_label_dependent_state_alone(name, variable):
    """CurricularFace's t and AdaCos's s used to average in the rows of bad labels."""
    cos = np.random.default_rng(2).uniform(-0.5, 0.9, (4, C)).astype("float32")
    loss = build(name)
    before = float(getattr(loss.state_layer, variable).numpy())
    compiled_value_and_grad(loss, np.array([0, 1, C, 3], "int32"), cos)
    assert float(getattr(loss.state_layer, variable).numpy()) == before
    compiled_value_and_grad(loss, np.array([0, 1, 2, 3], "int32"), cos)
    assert float(getattr(loss.state_layer, variable).numpy()) != before


def test_label_check_under_jax_eager_and_jit():
    script = textwrap.dedent(f"""
        import numpy as np, jax, keras
        assert keras.backend.backend() == "jax"
        import trainer
        loss = trainer.build("loss", {{"name": "arcface"}}, num_classes={C})
        cos = np.random.default_rng(0).uniform(-0.5, 0.5, (3, {C})).astype("float32")
        try:
            loss(np.array([0, {C}, 1]), cos)
            raise SystemExit("eager: no error")
        except ValueError as error:
            assert "label {C} " in str(error) and "{C} classes" in str(error), error
        step = jax.jit(jax.value_and_grad(lambda c, y: keras.ops.sum(loss.call(y, c))))
        value, grad = step(cos, np.array([0, {C}, 1]))
        grad = np.asarray(grad)
        assert np.isnan(value) and np.isnan(grad[1]).all() and np.isfinite(grad[[0, 2]]).all()
        value, grad = step(cos, np.array([0, 2, 1]))
        assert np.isfinite(value) and np.isfinite(grad).all()
        print("JAX-LABELS-OK")
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert "JAX-LABELS-OK" in done.stdout, done.stderr[-2000:]


# -- 2. labels stay integers --------------------------------------------------------------------
def test_issue_reproducer_bfloat16_cosface_keeps_label_257():
    cos = np.full((1, 300), -0.5, "float32")
    cos[0, 257] = 1.0
    for dtype in ("bfloat16", "float16", "float32"):
        loss = trainer.build("loss", {"name": "cosface", "dtype": dtype})
        # Label 257 as class 256 used to give 80 (s * 1.25); class 257 with cos 1 gives ~0.
        assert float(loss(np.array([257]), cos)) == pytest.approx(0.0, abs=1e-3), dtype


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["arcface", "cosface", "triplet", "supcon", "contrastive"])
def test_half_precision_losses_keep_labels_above_2048(name, dtype):
    """The loss dtype rounds predictions, never labels: same value as float32 on the same inputs."""
    from trainer.testing.inputs import high_label_batch

    probe = trainer.build("loss", {"name": name})
    batch = high_label_batch(probe.input_kind)
    half = batch.prediction(batch.x, dtype)
    same = keras.tree.map_structure(lambda v: tf.cast(v, tf.float32), half)
    expected = float(trainer.build("loss", {"name": name})(batch.labels, same))
    got = float(tf.cast(trainer.build("loss", {"name": name, "dtype": dtype})(batch.labels, half), tf.float32))
    assert got == pytest.approx(expected, rel={"float16": 2e-3, "bfloat16": 1e-2}[dtype])


@pytest.mark.parametrize("dtype,classes", [("float16", 2050), ("bfloat16", 258)])
def test_float_labels_that_cannot_hold_every_class_id_are_refused_even_when_compiled(dtype, classes):
    """A static check (dtype and class count are known while tracing): free under XLA."""
    loss = build("cosface")
    labels = tf.constant([0.0, 1.0], dtype)
    with pytest.raises(ValueError, match=f"labels arrived as {dtype}.*{classes} classes"):
        loss.call(labels, tf.zeros((2, classes)))
    with pytest.raises(ValueError, match=f"labels arrived as {dtype}"):
        tf.function(lambda y, c: loss.call(y, c), jit_compile=True)(labels, tf.zeros((2, classes)))
    # Below the limit, whole-number float labels still work (a direct call with floats).
    assert np.isfinite(loss.call(tf.constant([0.0, 1.0], dtype), tf.zeros((2, classes - 1))).numpy()).all()


# -- 4. bounded gradients in exact mode ------------------------------------------------------
SWEEP = np.unique(np.concatenate([np.linspace(-1.0, 1.0, 201), -1.0 + np.array([1e-7, 1e-6, 1e-5, 1e-4]),
                                  1.0 - np.array([1e-7, 1e-6, 1e-5, 1e-4])])).astype("float32")


def test_target_angle_slope_is_exact_inside_the_edge_and_bounded_outside():
    cos = tf.constant(SWEEP)
    with tf.GradientTape() as tape:
        tape.watch(cos)
        theta = target_angle(cos)
    slope = tape.gradient(theta, cos).numpy()
    c = SWEEP.astype(np.float64)
    exact = -1.0 / np.sqrt(np.maximum(1.0 - c ** 2, 1e-300))
    inside = np.abs(exact) <= MAX_ANGLE_SLOPE * 0.999
    np.testing.assert_allclose(slope[inside], exact[inside], rtol=1e-4)
    assert np.all(np.abs(slope) <= MAX_ANGLE_SLOPE * (1 + 1e-6)) and np.all(slope[~inside] < -0.99 * MAX_ANGLE_SLOPE)
    # Values are untouched: arccos of the cosine clamped to +-(1 - 1e-7), as before.
    expected = np.arccos(np.clip(c, -1 + 1e-7, 1 - 1e-7).astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(theta.numpy(), expected, atol=5e-7)


def sweep_gradient(loss, dtype):
    """d sum_i L_i / d cos for a batch whose i-th target cosine is SWEEP[i]; norms 1..120."""
    rng = np.random.default_rng(3)
    labels = np.arange(len(SWEEP)) % C
    cos = rng.uniform(-0.5, 0.5, (len(SWEEP), C)).astype("float32")
    cos[np.arange(len(SWEEP)), labels] = SWEEP
    norm = np.linspace(1.0, 120.0, len(SWEEP), dtype="float32")[:, None]
    variable = tf.constant(cos, dtype)
    with tf.GradientTape() as tape:
        tape.watch(variable)
        total = tf.reduce_sum(loss.call(tf.constant(labels), {"cos": variable, "norm": tf.constant(norm, dtype)}))
    grad = tape.gradient(total, variable)
    assert grad.dtype == variable.dtype
    return np.asarray(tf.cast(grad, tf.float32).numpy(), np.float64)


CONFIGS = [(n, {}) for n in MARGIN_LOSSES] + [
    ("combined", {"continuation": "sphereface"}),
    ("combined", {"continuation": "sphereface", "m1": 1.35, "m2": 0.0, "m3": 0.0}),
    ("adaface", {"margin": 0.8}), ("magface", {"upper_margin": 1.2})]


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name,params", CONFIGS, ids=[f"{n}-{'-'.join(map(str, p.values()))}" for n, p in CONFIGS])
def test_exact_gradients_are_finite_and_within_the_stated_bound(name, params, precision):
    """cos from -1 to 1 (and the float32 values next to +-1): |dL_i/dcos| <= loss.gradient_bound(C)
    = s * max(m1, 1) * MAX_ANGLE_SLOPE (AdaCos: its scale bound), in float32 and with the
    cosines in the half dtype of a mixed policy (65,504 is float16's largest finite value)."""
    dtype = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[precision]
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        loss = build(name, **params)
        bound = loss.gradient_bound(C)
        grad = sweep_gradient(loss, dtype)
    finally:
        keras.config.set_dtype_policy(previous)
    assert np.all(np.isfinite(grad))
    assert np.max(np.abs(grad)) <= bound * (1 + 1e-3), (np.max(np.abs(grad)), bound)
    assert bound < 65504 / 2  # room in float16 for the backward pass downstream


def test_stated_bounds():
    assert build("arcface").gradient_bound(C) == 64 * MAX_ANGLE_SLOPE == 6400
    assert build("combined", continuation="sphereface", m1=1.35).gradient_bound(C) == pytest.approx(64 * 135)
    assert build("cosface", scale=30).gradient_bound(C) == 3000


@pytest.mark.parametrize("params,before", [({"continuation": "sphereface"}, -13225), ({}, -13225)])
def test_issue_reproducer_gradients_near_minus_one(params, before):
    """combined was -13,225 at cos = -1 + 1e-6 (AdaFace -663): 1/sin(theta) unclipped."""
    cos = tf.Variable([[-1.0 + 1e-6, 0.0]])
    for name, extra in [("combined", params), ("adaface", {}), ("arcface", {})]:
        loss = build(name, **extra)
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(loss.call(tf.constant([0]), {"cos": cos, "norm": tf.constant([[30.0]])}))
        g = float(tape.gradient(value, cos).numpy()[0, 0])
        assert np.isfinite(g) and abs(g) <= loss.gradient_bound(2) and abs(g) < abs(before) / 5, (name, g)
        if name == "combined" and not params:  # insightface continuation: ArcFace's linear fallback
            assert g == pytest.approx(-64.0, rel=1e-4)


# -- 5. combined margin's continuations -------------------------------------------------------------
def sphereface_reference(c, m1, m2, m3):
    angle = m1 * math.acos(c) + m2
    k = math.floor(angle / math.pi)
    return (-1) ** k * math.cos(angle) - 2 * k - m3


def insightface_reference(c, m2, m3):
    """insightface CombinedMarginLoss (m1 = 1): cos(theta + m2) while theta + m2 <= pi, else
    ArcFace's fallback cos(theta) - m2 sin(m2); then minus m3."""
    theta = math.acos(c)
    return (math.cos(theta + m2) if theta + m2 <= math.pi else c - m2 * math.sin(m2)) - m3


ANGLES = np.linspace(0.003, math.pi - 0.003, 241)


@pytest.mark.parametrize("continuation,m1,m2,m3", [
    ("insightface", 1.0, 0.3, 0.2), ("insightface", 1.0, 0.5, 0.0), ("insightface", 1.0, 0.0, 0.35),
    ("sphereface", 1.0, 0.3, 0.2), ("sphereface", 1.35, 0.1, 0.0), ("sphereface", 2.5, 0.0, 0.0)])
def test_combined_target_logit_matches_float64_over_all_angles(continuation, m1, m2, m3):
    loss = build("combined", continuation=continuation, m1=m1, m2=m2, m3=m3)
    cos = np.cos(ANGLES).astype(np.float32)
    got = loss.target_logit(tf.constant(cos), MarginBatch(None, None, None, None)).numpy()
    if continuation == "insightface":
        expected = np.array([insightface_reference(float(c), m2, m3) for c in cos])
    else:
        expected = np.array([sphereface_reference(float(c), m1, m2, m3) for c in cos])
    past_pi = m1 * np.arccos(cos.astype(np.float64)) + m2 > math.pi
    if m2 > 0 or m1 > 1:
        assert past_pi.sum() > 5  # the sweep covers the continuation
    np.testing.assert_allclose(got, expected, atol=5e-6)


def test_combined_continuations_differ_only_past_pi_and_both_decrease():
    cos = tf.constant(np.cos(ANGLES).astype(np.float32))
    batch = MarginBatch(None, None, None, None)
    insight = build("combined").target_logit(cos, batch).numpy()
    sphere = build("combined", continuation="sphereface").target_logit(cos, batch).numpy()
    past_pi = ANGLES + 0.3 > math.pi
    np.testing.assert_array_equal(insight[~past_pi], sphere[~past_pi])
    assert np.all(np.abs(insight[past_pi] - sphere[past_pi]) > 1e-3)
    assert np.all(np.diff(sphere) < 0) and np.all(np.diff(insight[~past_pi]) < 0) and np.all(np.diff(insight[past_pi]) < 0)


@pytest.mark.parametrize("continuation", ["insightface", "sphereface"])
def test_combined_loss_near_cos_minus_one_matches_float64(continuation):
    """End to end (cross-entropy too), with target angles past pi - m2."""
    rng = np.random.default_rng(5)
    cos = rng.uniform(-0.4, 0.4, (6, C))
    labels = np.array([0, 1, 2, 3, 4, 0])
    cos[np.arange(6), labels] = [-1.0, -0.999, -0.99, -0.97, -0.96, 0.5]
    cos = cos.astype(np.float32).astype(np.float64)
    target = (lambda c: insightface_reference(c, 0.3, 0.2)) if continuation == "insightface" else (
        lambda c: sphereface_reference(c, 1.0, 0.3, 0.2))
    expected = []
    for i, y in enumerate(labels):
        logits = 64.0 * cos[i].copy()
        logits[y] = 64.0 * target(max(cos[i, y], float(np.float32(-1 + 1e-7))))  # float32 forward clamp
        top = logits.max()
        expected.append(top + math.log(np.exp(logits - top).sum()) - logits[y])
    got = build("combined", continuation=continuation).call(tf.constant(labels), tf.constant(cos, tf.float32))
    np.testing.assert_allclose(got.numpy(), expected, rtol=5e-6, atol=5e-5)


def test_combined_insightface_is_arcface_minus_a_cosine_margin():
    cos = tf.constant(np.cos(ANGLES).astype(np.float32))
    batch = MarginBatch(None, None, None, None)
    arc = build("arcface", margin=0.5).target_logit(cos, batch).numpy()
    combined = build("combined", m2=0.5, m3=0.0).target_logit(cos, batch).numpy()
    np.testing.assert_array_equal(combined, arc)


def test_combined_continuation_errors_are_one_line():
    with pytest.raises(ConfigError, match="insightface's continuation is defined for m1 = 1 only .*"
                                          "loss.continuation=sphereface"):
        build("combined", m1=1.35)
    with pytest.raises(ConfigError, match="continuation must be one of insightface, sphereface, got 'sphere'"):
        build("combined", continuation="sphere")
    config = build("combined", continuation="sphereface", m1=2.0).get_config()
    assert config["continuation"] == "sphereface"
    assert type(build("combined")).from_config(config).get_config() == config


def test_host_check_without_a_static_class_count():
    from losses.base import check_label_values

    with pytest.raises(ValueError, match=r"^x: label -3 \(sample 1, 1 bad in the batch\) is out of range; "
                                         "labels must be non-negative integers$"):
        check_label_values(np.array([0, -3, 7]), None, "x")
    check_label_values(np.array([0.0, 4.0]), 5, "x")  # whole-number floats in range are fine
