"""Margin losses vs float64 naive loops written from the papers' formulas."""

import math

import numpy as np
import pytest
import tensorflow as tf

import trainer

RNG = np.random.default_rng(7)
B, C = 6, 5
LABELS = np.array([0, 1, 2, 3, 4, 1], "int32")
COS = np.clip(RNG.uniform(-0.6, 0.8, size=(B, C)), -1, 1)
NORM = RNG.uniform(5.0, 120.0, size=(B, 1))


# -- float64 references, one sample at a time -------------------------------------------
def cross_entropy(logits, target):
    top = max(logits)
    return top + math.log(sum(math.exp(v - top) for v in logits)) - logits[target]


def arc_target(c, m):
    theta = math.acos(c)
    return math.cos(theta + m) if theta + m <= math.pi else c - m * math.sin(m)


def combined_target(c, m1, m2, m3):
    """continuation=sphereface: the k-th half-turn past pi is (-1)^k cos(angle) - 2k."""
    angle = m1 * math.acos(c) + m2
    k = math.floor(angle / math.pi)
    return (-1) ** k * math.cos(angle) - 2 * k - m3


def insightface_target(c, m2, m3):
    """continuation=insightface (m1 = 1): insightface's CombinedMarginLoss, ArcFace's fallback past pi."""
    theta = math.acos(c)
    return (math.cos(theta + m2) if theta + m2 <= math.pi else c - m2 * math.sin(m2)) - m3


def margin_reference(cos, labels, scale, target_fn, other_fn=None):
    losses = []
    for i in range(len(labels)):
        y = labels[i]
        row = []
        for j in range(cos.shape[1]):
            if j == y:
                row.append(scale * target_fn(i, cos[i, y]))
            else:
                row.append(scale * (other_fn(i, cos[i, j]) if other_fn else cos[i, j]))
        losses.append(cross_entropy(row, y))
    return np.array(losses)


def adaface_reference(cos, labels, norm, s=64, m=0.4, h=0.333, eps=1e-3):
    n = np.clip(norm[:, 0], 0.001, 100)
    mean = 0.01 * n.mean() + 0.99 * 20.0
    std = 0.01 * n.std(ddof=1) + 0.99 * 100.0
    z = np.clip(h * (n - mean) / (std + eps), -1, 1)

    def target(i, c):
        angle = min(max(math.acos(c) - m * z[i], eps), math.pi - eps)
        return math.cos(angle) - (m + m * z[i])

    return margin_reference(cos, labels, s, target)


def magface_reference(cos, labels, norm, s=64, la=10, ua=110, lm=0.45, um=0.8, lg=35):
    a = np.clip(norm[:, 0], la, ua)
    margin = lm + (um - lm) * (a - la) / (ua - la)
    ce = margin_reference(cos, labels, s, lambda i, c: arc_target(c, margin[i]))
    return ce + lg * (a / ua ** 2 + 1 / a)


def curricular_reference(cos, labels, s=64, m=0.5, t0=0.0, t_from=None):
    """``t_from``: the cosines t is computed from (t carries no gradient in the paper)."""
    target_cos = cos[np.arange(len(labels)), labels]
    t_cos = target_cos if t_from is None else t_from[np.arange(len(labels)), labels]
    t = 0.01 * t_cos.mean() + 0.99 * t0

    def other(i, c):
        return c * (t + c) if c > math.cos(math.acos(target_cos[i]) + m) else c

    return margin_reference(cos, labels, s, lambda i, c: arc_target(c, m), other), t


def adacos_reference(cos, labels, dynamic):
    s = math.sqrt(2) * math.log(C - 1)
    if dynamic:
        b_avg = np.mean([sum(math.exp(s * cos[i, j]) for j in range(C) if j != labels[i])
                         for i in range(len(labels))])
        theta_med = np.median(np.arccos(cos[np.arange(len(labels)), labels]))
        s = math.log(b_avg) / math.cos(min(math.pi / 4, theta_med))
    return margin_reference(cos, labels, s, lambda i, c: c), s


CASES = {
    "normface": ({}, lambda cos, norm: margin_reference(cos, LABELS, 64, lambda i, c: c)),
    "arcface": ({"margin": 0.5}, lambda cos, norm: margin_reference(cos, LABELS, 64, lambda i, c: arc_target(c, 0.5))),
    "subcenter_arcface": ({}, lambda cos, norm: margin_reference(cos, LABELS, 64, lambda i, c: arc_target(c, 0.5))),
    "cosface": ({"scale": 30.0}, lambda cos, norm: margin_reference(cos, LABELS, 30, lambda i, c: c - 0.35)),
    "combined": ({}, lambda cos, norm: margin_reference(cos, LABELS, 64, lambda i, c: insightface_target(c, 0.3, 0.2))),
    "combined_sphereface": ({"continuation": "sphereface"},
                            lambda cos, norm: margin_reference(cos, LABELS, 64, lambda i, c: combined_target(c, 1, 0.3, 0.2))),
    "sphereface": ({"m1": 1.35, "m2": 0.0, "m3": 0.0, "scale": 16.0, "continuation": "sphereface"},
                   lambda cos, norm: margin_reference(cos, LABELS, 16, lambda i, c: combined_target(c, 1.35, 0, 0))),
    "magface": ({}, lambda cos, norm: magface_reference(cos, LABELS, norm)),
    "adaface": ({}, lambda cos, norm: adaface_reference(cos, LABELS, norm)),
    "curricularface": ({}, lambda cos, norm: curricular_reference(cos, LABELS)[0]),
    "adacos_fixed": ({"dynamic": False}, lambda cos, norm: adacos_reference(cos, LABELS, False)[0]),
    "adacos": ({}, lambda cos, norm: adacos_reference(cos, LABELS, True)[0]),
    "elasticface_arc": ({"sigma": 0.0}, lambda cos, norm: margin_reference(cos, LABELS, 64, lambda i, c: arc_target(c, 0.5))),
    "elasticface_cos": ({"sigma": 0.0}, lambda cos, norm: margin_reference(cos, LABELS, 64, lambda i, c: c - 0.35)),
}
REGISTERED = {"sphereface": "combined", "combined_sphereface": "combined", "adacos_fixed": "adacos"}


def build(case, **extra):
    params, _ = CASES[case]
    return trainer.build("loss", {"name": REGISTERED.get(case, case), **params, **extra}, num_classes=C)


def per_sample(loss, cos, norm=NORM, dtype="float32"):
    y_pred = {"cos": tf.constant(cos, dtype), "norm": tf.constant(norm, dtype)}
    return loss.call(tf.constant(LABELS, tf.float32), y_pred).numpy()


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_float64_reference(case, dtype):
    """Inputs in each float dtype; the reference sees the same (rounded) inputs, maths is float32."""
    cos, norm = COS.astype(dtype).astype(np.float64), NORM.astype(dtype).astype(np.float64)
    expected = CASES[case][1](cos, norm)
    got = per_sample(build(case), cos, norm, dtype)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-4)


@pytest.mark.parametrize("case", ["arcface", "cosface", "combined", "magface", "adaface", "curricularface"])
def test_gradient_matches_float64_finite_differences(case):
    expected_fn = CASES[case][1]
    if case == "curricularface":  # hold t (a no-gradient EMA) at its unperturbed value
        expected_fn = lambda cos, norm: curricular_reference(cos, LABELS, t_from=COS)[0]  # noqa: E731
    cos = tf.Variable(COS, dtype=tf.float32)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(build(case).call(tf.constant(LABELS, tf.float32),
                                               {"cos": cos, "norm": tf.constant(NORM, tf.float32)}))
    grad = tape.gradient(total, cos).numpy()
    numeric, h = np.zeros_like(COS), 1e-6
    for index in np.ndindex(*COS.shape):
        for sign in (1, -1):
            shifted = COS.copy()
            shifted[index] += sign * h
            numeric[index] += sign * expected_fn(shifted, NORM).sum() / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=2e-3)


def test_arcface_angle_sweep_covers_both_branches():
    """Target angles across [0, pi]: cos(theta + m) below pi - m, cos - m sin m above."""
    loss = trainer.build("loss", {"name": "arcface", "margin": 0.5})
    angles = np.linspace(0.01, math.pi - 0.01, 181)
    cos = np.cos(angles).astype(np.float32)
    from losses.margin import MarginBatch
    got = loss.target_logit(tf.constant(cos), MarginBatch(None, None, None, None)).numpy()
    expected = np.array([arc_target(float(c), 0.5) for c in cos])
    assert (angles > math.pi - 0.5).sum() > 20 and (angles < math.pi - 0.5).sum() > 20
    np.testing.assert_allclose(got, expected, atol=3e-6)
    # Below the switch the modified logit keeps decreasing with the angle.
    below = angles < math.pi - 0.5
    assert np.all(np.diff(got[below]) < 0)


def test_straight_through_has_softmax_gradient_and_arcface_value():
    cos = tf.constant(COS, tf.float32)
    y_true = tf.constant(LABELS, tf.float32)
    results = {}
    for name, gradient in [("normface", None), ("arcface", "exact"), ("arcface", "straight_through")]:
        loss = trainer.build("loss", {"name": name} if gradient is None else {"name": name, "gradient": gradient})
        with tf.GradientTape() as tape:
            tape.watch(cos)
            value = loss(y_true, cos)
        results[gradient] = float(value), tape.gradient(value, cos).numpy()
    exact, straight = results["exact"], results["straight_through"]
    assert straight[0] == pytest.approx(exact[0], rel=1e-6)
    assert not np.allclose(straight[1], exact[1], atol=1e-3)
    # Straight-through: the target column's gradient is softmax's on the modified logits,
    # with d(modified)/d(cos) = 1. Check it against a float64 computation.
    logits = 64.0 * COS.copy()
    for i, y in enumerate(LABELS):
        logits[i, y] = 64.0 * arc_target(COS[i, y], 0.5)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(B), LABELS] -= 1
    np.testing.assert_allclose(straight[1], 64.0 * p / B, atol=1e-4)


def test_exact_gradient_is_finite_at_cosine_one():
    loss = trainer.build("loss", {"name": "arcface"})
    cos = tf.constant([[1.0, 0.0], [-1.0, 0.5]], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(cos)
        value = loss(tf.constant([0, 0]), cos)
    assert np.all(np.isfinite(tape.gradient(value, cos).numpy())) and np.isfinite(float(value))


def test_stateful_losses_update_their_state_like_the_reference():
    cur = build("curricularface")
    per_sample(cur, COS)
    assert float(cur.state_layer.t) == pytest.approx(curricular_reference(COS, LABELS)[1], rel=1e-5)
    ada = build("adacos")
    per_sample(ada, COS)
    assert float(ada.state_layer.scale) == pytest.approx(adacos_reference(COS, LABELS, True)[1], rel=1e-5)
    face = build("adaface")
    per_sample(face, COS)
    n = np.clip(NORM[:, 0], 0.001, 100)
    assert float(face.state_layer.norm_mean) == pytest.approx(0.01 * n.mean() + 0.99 * 20, rel=1e-6)
    assert float(face.state_layer.norm_std) == pytest.approx(0.01 * n.std(ddof=1) + 0.99 * 100, rel=1e-6)
    # The state is in non-trainable weights of a layer a model can track (checkpoints).
    assert [v.name for v in face.state_layer.non_trainable_weights] == ["norm_mean", "norm_std"]
    assert cur.state_layer.trainable_weights == []


def test_elasticface_plus_gives_harder_samples_larger_margins():
    cos = tf.constant(COS, tf.float32)
    target = COS[np.arange(B), LABELS]
    margins = {}
    for plus in (False, True):
        loss = trainer.build("loss", {"name": "elasticface_cos", "sigma": 0.1, "plus": plus, "seed": 3})
        batch = loss.prepare(tf.constant(LABELS, tf.float32), cos)
        margins[plus] = target - loss.target_logit(batch.target_cos, batch).numpy()
    np.testing.assert_allclose(np.sort(margins[True]), np.sort(margins[False]), atol=1e-6)
    order = np.argsort(-target)  # easiest first
    assert np.all(np.diff(margins[True][order]) >= 0)
    assert np.std(margins[False]) > 0.01


def test_norm_aware_losses_say_they_need_the_dict():
    for name in ("magface", "adaface"):
        with pytest.raises(ValueError, match="norm"):
            trainer.build("loss", name)(LABELS, COS.astype("float32"))


def test_subcenter_arcface_asks_the_head_for_sub_centres():
    assert trainer.build("loss", {"name": "subcenter_arcface", "sub_centers": 4}).head_requirements() == {"sub_centers": 4}
    assert trainer.build("loss", "arcface").head_requirements() == {}
