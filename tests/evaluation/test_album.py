"""Album clustering: agglomerative vs SciPy, metrics vs brute force, breakage cases."""

import itertools

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from trainer.evaluation import album


def same_partition(a, b):
    return len(set(zip(a, b))) == len(set(a)) == len(set(b))


@pytest.mark.parametrize("method", album.LINKAGES)
@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_agglomerative_matches_scipy(method, threshold):
    embeddings = np.random.default_rng(7).normal(size=(25, 5))
    distances = album.cosine_distances(embeddings)
    np.fill_diagonal(distances, 0)
    reference = fcluster(linkage(squareform(distances, checks=False), method), threshold, criterion="distance")
    assert same_partition(album.agglomerative(embeddings, threshold, method), reference)


def brute_pairwise(predicted, truth):
    pairs = list(itertools.combinations(range(len(truth)), 2))
    together = {(i, j) for i, j in pairs if predicted[i] == predicted[j]}
    same = {(i, j) for i, j in pairs if truth[i] == truth[j]}
    precision = len(together & same) / len(together) if together else 1.0
    recall = len(together & same) / len(same) if same else 1.0
    return precision, recall


def brute_bcubed(predicted, truth):
    n = len(truth)
    precision = np.mean([np.mean([truth[j] == truth[i] for j in range(n) if predicted[j] == predicted[i]])
                         for i in range(n)])
    recall = np.mean([np.mean([predicted[j] == predicted[i] for j in range(n) if truth[j] == truth[i]])
                      for i in range(n)])
    return precision, recall


@pytest.mark.parametrize("seed", range(4))
def test_pairwise_and_bcubed_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    truth, predicted = rng.integers(0, 4, 30), rng.integers(0, 5, 30)
    scores = album.pairwise_scores(predicted, truth)
    p, r = brute_pairwise(predicted, truth)
    assert (scores["pairwise_precision"], scores["pairwise_recall"]) == pytest.approx((p, r))
    assert scores["pairwise_f1"] == pytest.approx(2 * p * r / (p + r))
    b = album.bcubed_scores(predicted, truth)
    assert (b["bcubed_precision"], b["bcubed_recall"]) == pytest.approx(brute_bcubed(predicted, truth))


def test_breakage_counts_mixed_disappeared_split():
    before = [0, 0, 0, 1, 1, 2, 2, 3, 3, 4]
    after = [5, 5, 6, 6, 6, 7, 8, 9, 9, 9]
    # album 0 -> split over 5 and 6; 6 mixes 0 and 1 (1 dominates it), so 0 still continues in 5;
    # album 2 -> split over 7 and 8; album 3 and the singleton 4 share 9 (not counted: size 1).
    result = album.breakage(before, after, min_size=2)
    assert (result["albums"], result["mixed"], result["disappeared"], result["split"]) == (4, 3, 0, 2)
    merged = album.breakage([0, 0, 1, 1, 1], [0, 0, 0, 0, 0])
    assert (merged["mixed"], merged["disappeared"], merged["split"]) == (2, 1, 0)
    assert album.breakage([0, 0, 1, 1], [3, 3, 4, 4])["mixed_rate"] == 0.0


def test_incremental_clustering_grows_albums_without_splitting_them():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    embeddings = np.repeat(centres, 4, axis=0) + rng.normal(size=(12, 16)) * 0.3
    seeds = np.array([0, 0, -1, -1, 1, 1, -1, -1, 2, 2, -1, -1])
    labels = album.agglomerative(embeddings, 0.3, initial=seeds)
    assert same_partition(labels, np.repeat([0, 1, 2], 4))
    # A deliberately wrong seed album stays together: incremental never splits an album.
    wrong = np.array([0, -1, -1, -1, 0, -1, -1, -1, -1, -1, -1, -1])
    labels = album.agglomerative(embeddings, 0.3, initial=wrong)
    assert labels[0] == labels[4]


def test_album_report_perfect_vs_random_embeddings():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(12), 6)
    families = labels // 4
    perfect = np.eye(12)[labels] + rng.normal(size=(72, 12)) * 0.01
    good = album.album_report(perfect, labels, families, threshold=0.5)
    for period in ("period1", "period2_incremental", "period2_full"):
        assert good[period]["pairwise_f1"] == 1.0 and good[period]["bcubed_f"] == 1.0
    assert good["period2_full"]["breakage"]["split_rate"] == 0.0
    noise = album.album_report(rng.normal(size=(72, 12)), labels, families, threshold=0.5)
    assert noise["period2_full"]["pairwise_f1"] < 0.6
    update = album.model_update_report(perfect, perfect, labels, families, threshold=0.5, pairs=50)
    assert update["verification_old_new"] == 1.0
    assert update["breakage_old_to_new"]["mixed_rate"] == 0.0


def test_auto_threshold_is_the_verification_operating_point():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(10), 5)
    embeddings = np.eye(10)[labels] + rng.normal(size=(50, 10)) * 0.05
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    threshold = album.resolve_threshold("auto", embeddings, labels)
    # Same-identity cosine distances are ~0, different ~1: the operating point lies between.
    assert 0.0 < threshold < 1.0
    report = album.album_report(embeddings, labels, labels // 5, threshold)
    assert report["period2_full"]["pairwise_f1"] == 1.0
    assert album.resolve_threshold(0.3, embeddings, labels) == 0.3
