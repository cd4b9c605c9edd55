"""Pair, triplet and contrastive losses vs float64 naive loops, closed forms and edge cases."""

import math

import numpy as np
import pytest
import tensorflow as tf

import trainer

RNG = np.random.default_rng(11)
LABELS = np.array([0, 1, 0, 2, 1, 2, 0, 3], "int32")   # class 3 has no positive
X = RNG.normal(size=(8, 5))


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def dist(u, i, j):
    return math.sqrt(max(2 - 2 * float(u[i] @ u[j]), 1e-12))


def contrastive_ref(x, y, pos_margin=0.0, neg_margin=1.0):
    u, total = unit(x), 0.0
    for positive in (True, False):
        losses = [max(dist(u, i, j) - pos_margin, 0) if positive else max(neg_margin - dist(u, i, j), 0)
                  for i in range(len(y)) for j in range(len(y))
                  if i != j and (y[i] == y[j]) == positive]
        paying = [v for v in losses if v > 0]
        total += sum(paying) / len(paying) if paying else 0.0
    return total


def triplets(y):
    n = len(y)
    return [(a, p, q) for a in range(n) for p in range(n) for q in range(n)
            if a != p and y[a] == y[p] and y[q] != y[a]]


def triplet_ref(x, y, margin, mining):
    u = unit(x)
    if mining == "batch_hard":
        losses = []
        for a in range(len(y)):
            pos = [dist(u, a, p) for p in range(len(y)) if p != a and y[p] == y[a]]
            neg = [dist(u, a, q) for q in range(len(y)) if y[q] != y[a]]
            if pos and neg:
                losses.append(max(max(pos) - min(neg) + margin, 0))
        return sum(losses) / len(losses)
    losses = []
    for a, p, q in triplets(y):
        d_ap, d_an = dist(u, a, p), dist(u, a, q)
        if mining == "semi_hard" and not 0 < d_an - d_ap <= margin:
            continue
        losses.append(max(d_ap - d_an + margin, 0))
    paying = [v for v in losses if v > 0]
    return sum(paying) / len(paying) if paying else 0.0


def multi_similarity_ref(x, y, alpha=2.0, beta=50.0, base=0.5, eps=0.1):
    s, n, total = unit(x) @ unit(x).T, len(y), 0.0
    for i in range(n):
        pos = [s[i, j] for j in range(n) if j != i and y[j] == y[i]]
        neg = [s[i, j] for j in range(n) if y[j] != y[i]]
        if not pos or not neg:
            continue
        kept_pos = [v for v in pos if v - eps < max(neg)]
        kept_neg = [v for v in neg if v + eps > min(pos)]
        if kept_pos:
            total += math.log(1 + sum(math.exp(-alpha * (v - base)) for v in kept_pos)) / alpha
        if kept_neg:
            total += math.log(1 + sum(math.exp(beta * (v - base)) for v in kept_neg)) / beta
    return total / n


def circle_ref(x, y, m=0.4, gamma=80.0):
    s, n, losses = unit(x) @ unit(x).T, len(y), []
    for i in range(n):
        pos = [s[i, j] for j in range(n) if j != i and y[j] == y[i]]
        neg = [s[i, j] for j in range(n) if y[j] != y[i]]
        if not pos or not neg:
            continue
        lp = [-gamma * max(1 + m - v, 0) * (v - (1 - m)) for v in pos]
        ln = [gamma * max(v + m, 0) * (v - m) for v in neg]
        lse = lambda v: max(v) + math.log(sum(math.exp(t - max(v)) for t in v))  # noqa: E731
        z = lse(lp) + lse(ln)
        losses.append(max(z, 0) + math.log1p(math.exp(-abs(z))))
    return sum(losses) / len(losses)


def supcon_ref(x, y, tau=0.1):
    s, n, losses = unit(x) @ unit(x).T / tau, len(y), []
    for i in range(n):
        pos = [p for p in range(n) if p != i and y[p] == y[i]]
        if not pos:
            continue
        log_denominator = math.log(sum(math.exp(s[i, a]) for a in range(n) if a != i))
        losses.append(-sum(s[i, p] - log_denominator for p in pos) / len(pos))
    return sum(losses) / len(losses)


CASES = {
    "contrastive": ({"name": "contrastive"}, lambda x, y: contrastive_ref(x, y)),
    "contrastive_margins": ({"name": "contrastive", "pos_margin": 0.3, "neg_margin": 1.2},
                            lambda x, y: contrastive_ref(x, y, 0.3, 1.2)),
    "triplet_batch_hard": ({"name": "triplet", "margin": 0.2}, lambda x, y: triplet_ref(x, y, 0.2, "batch_hard")),
    "triplet_batch_all": ({"name": "triplet", "margin": 0.2, "mining": "batch_all"},
                          lambda x, y: triplet_ref(x, y, 0.2, "batch_all")),
    "triplet_semi_hard": ({"name": "triplet", "margin": 0.5, "mining": "semi_hard"},
                          lambda x, y: triplet_ref(x, y, 0.5, "semi_hard")),
    "multi_similarity": ({"name": "multi_similarity"}, lambda x, y: multi_similarity_ref(x, y)),
    "circle": ({"name": "circle"}, lambda x, y: circle_ref(x, y)),
    "supcon": ({"name": "supcon"}, lambda x, y: supcon_ref(x, y)),
}


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_float64_reference(case, dtype):
    x = X.astype(dtype).astype(np.float64)
    config, reference = CASES[case]
    loss = trainer.build("loss", config)
    per_sample = loss.call(tf.constant(LABELS, tf.float32), tf.constant(x, dtype)).numpy()
    assert per_sample.shape == (8,) and per_sample.dtype == np.float32
    assert per_sample.mean() == pytest.approx(reference(x, LABELS), rel=2e-5, abs=1e-6)


def test_ntxent_closed_forms_and_supcon_equivalence():
    loss = trainer.build("loss", {"name": "ntxent", "temperature": 0.1})
    n = 4
    assert float(loss(None, np.ones((2 * n, 6), "float32"))) == pytest.approx(math.log(2 * n - 1), rel=1e-6)
    aligned = np.zeros((2 * n, 6), "float32")
    for i in range(n):
        aligned[i, i] = aligned[i + n, i] = 1.0
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / 0.1))
    assert float(loss(None, aligned)) == pytest.approx(expected, rel=1e-4)
    views = RNG.normal(size=(2 * n, 6)).astype("float32")
    ids = np.concatenate([np.arange(n), np.arange(n)])
    supcon = trainer.build("loss", {"name": "supcon", "temperature": 0.1})
    assert float(loss(ids, views)) == pytest.approx(float(supcon(ids, views)), rel=1e-6)
    assert float(loss(None, views)) == pytest.approx(supcon_ref(views.astype(np.float64), ids), rel=1e-5)


@pytest.mark.parametrize("config", [{"name": "contrastive"}, {"name": "triplet"}, {"name": "circle"},
                                    {"name": "triplet", "mining": "batch_all"}, {"name": "supcon"},
                                    {"name": "multi_similarity"}])
def test_no_valid_pairs_gives_exact_zero_and_finite_gradient(config):
    """All-different labels (no positives) -> loss exactly 0 (or only negatives' part), backward works."""
    x = tf.constant(RNG.normal(size=(4, 5)), tf.float32)
    labels = np.arange(4)
    loss = trainer.build("loss", config)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(labels, x)
    grad = tape.gradient(value, x).numpy()
    assert np.all(np.isfinite(grad))
    if config["name"] != "contrastive":  # contrastive still pushes negatives apart
        assert float(value) == 0.0


def test_triplet_soft_margin_and_squared_distance():
    u = unit(X)
    loss = trainer.build("loss", {"name": "triplet", "soft_margin": True})
    expected = []
    for a in range(8):
        pos = [dist(u, a, p) for p in range(8) if p != a and LABELS[p] == LABELS[a]]
        neg = [dist(u, a, q) for q in range(8) if LABELS[q] != LABELS[a]]
        if pos:
            expected.append(math.log1p(math.exp(max(pos) - min(neg))))
    assert float(loss(LABELS, X.astype("float32"))) == pytest.approx(np.mean(expected), rel=1e-5)
    squared = trainer.build("loss", {"name": "triplet", "squared": True, "mining": "batch_all", "margin": 0.5})
    d2 = lambda i, j: 2 - 2 * float(u[i] @ u[j])  # noqa: E731
    paying = [v for v in (max(d2(a, p) - d2(a, q) + 0.5, 0) for a, p, q in triplets(LABELS)) if v > 0]
    assert float(squared(LABELS, X.astype("float32"))) == pytest.approx(np.mean(paying), rel=1e-5)
