"""Retrieval metrics against a direct O(N²) computation, ties included."""

import numpy as np
import pytest

from trainer.evaluation import retrieval as r

KS = (1, 2, 5)


def brute_force(queries, query_labels, references=None, reference_labels=None, ks=KS):
    """Per query: sort every candidate by (-similarity, index), then count by hand."""
    self_reference = references is None
    q = r.normalise(queries)
    refs = q if self_reference else r.normalise(references)
    ref_labels = query_labels if self_reference else reference_labels
    sums = {"precision_at_1": 0.0, "r_precision": 0.0, "map_at_r": 0.0, **{k: 0.0 for k in ks}}
    used = 0
    for i in range(len(q)):
        candidates = [j for j in range(len(refs)) if not (self_reference and j == i)]
        similarity = {j: float(sum(a * b for a, b in zip(q[i], refs[j]))) for j in candidates}
        order = sorted(candidates, key=lambda j: (-similarity[j], j))
        relevant = [ref_labels[j] == query_labels[i] for j in order]
        big_r = sum(relevant)
        if big_r == 0:
            continue
        used += 1
        sums["precision_at_1"] += relevant[0]
        sums["r_precision"] += sum(relevant[:big_r]) / big_r
        average_precision, hits = 0.0, 0
        for position in range(big_r):
            if relevant[position]:
                hits += 1
                average_precision += hits / (position + 1)
        sums["map_at_r"] += average_precision / big_r
        for k in ks:
            sums[k] += any(relevant[:k])
    return {key: value / used for key, value in sums.items()}, used


def assert_matches(result, expected, used, ks=KS):
    assert result["queries"] == used
    for key in ("precision_at_1", "r_precision", "map_at_r"):
        assert result[key] == pytest.approx(expected[key], abs=1e-12), key
    for k in ks:
        assert result["recall_at_k"][str(k)] == pytest.approx(expected[k], abs=1e-12), k


def random_set(seed, count=60, dim=6, classes=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, dim)), rng.integers(0, classes, count)


def clustered_set(seed, count=80, dim=8, classes=6, spread=0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = rng.integers(0, classes, count)
    return centres[labels] + spread * rng.normal(size=(count, dim)), labels


def sign_set(seed, count=70, dim=4, classes=5):
    """±1 vectors: unit length after dividing by 2 exactly, so similarities tie exactly and often."""
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=(count, dim)), rng.integers(0, classes, count)


@pytest.mark.parametrize("make", [random_set, clustered_set, sign_set])
@pytest.mark.parametrize("seed", [0, 1])
def test_self_reference_matches_brute_force(make, seed):
    embeddings, labels = make(seed)
    expected, used = brute_force(embeddings, labels)
    assert_matches(r.retrieval_metrics(embeddings, labels, ks=KS), expected, used)


@pytest.mark.parametrize("make", [random_set, clustered_set, sign_set])
def test_separate_gallery_matches_brute_force(make):
    embeddings, labels = make(3, count=90)
    queries, gallery = slice(0, 30), slice(30, 90)
    expected, used = brute_force(embeddings[queries], labels[queries], embeddings[gallery], labels[gallery])
    result = r.retrieval_metrics(embeddings[queries], labels[queries], embeddings[gallery], labels[gallery],
                                 ks=KS)
    assert_matches(result, expected, used)
    assert result["references"] == 60 and not result["self_reference"]


@pytest.mark.parametrize("max_elements", [1, 7, 100, 10**9])
def test_blocks_of_any_size_give_identical_results(max_elements):
    embeddings, labels = sign_set(4, count=50)
    whole = r.retrieval_metrics(embeddings, labels, ks=KS)
    assert r.retrieval_metrics(embeddings, labels, ks=KS, max_elements=max_elements) == whole
    # The block a query lands in never holds more than max_elements similarities (or one row).
    assert all(len(b) * 50 <= max(max_elements, 50) for b in r.query_blocks(50, 50, max_elements))


def test_ties_rank_lower_reference_index_first():
    # Every reference is equally similar to the query: the order is the index order.
    references = np.ones((4, 2))
    labels = np.array([0, 1, 1, 0])
    result = r.retrieval_metrics(np.ones((1, 2)), np.array([1]), references, labels, ks=(1, 2))
    # Ranking 0,1,2,3 → relevance F,T,T,F with R = 2.
    assert result["precision_at_1"] == 0.0
    assert result["r_precision"] == 0.5
    assert result["map_at_r"] == pytest.approx((1 / 2) / 2)
    assert result["recall_at_k"] == {"1": 0.0, "2": 1.0}


def test_top_k_equals_a_stable_full_sort():
    rng = np.random.default_rng(5)
    similarities = rng.integers(0, 4, size=(9, 13)).astype(float)  # many ties
    for k in (1, 3, 13):
        expected = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
        assert np.array_equal(r.top_k(similarities, k), expected)


def test_queries_with_nothing_to_find_are_skipped_and_counted():
    embeddings = np.eye(4)
    labels = np.array([0, 0, 1, 2])  # labels 1 and 2 have no other member
    result = r.retrieval_metrics(embeddings, labels, ks=(1,))
    assert result["queries"] == 2 and result["skipped"] == 2 and result["precision_at_1"] == 1.0


def test_perfect_and_shuffled_embeddings():
    embeddings, labels = clustered_set(6, spread=0.0)  # every member sits on its class centre
    perfect = r.retrieval_metrics(embeddings, labels)
    assert perfect["precision_at_1"] == perfect["r_precision"] == perfect["map_at_r"] == 1.0
    shuffled = r.retrieval_metrics(embeddings, np.random.default_rng(0).permutation(labels))
    assert shuffled["map_at_r"] < 0.5
