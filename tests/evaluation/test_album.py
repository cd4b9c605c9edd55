"""Album clustering vs a brute-force reference, metrics vs brute force, breakage cases."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.evaluation import album


def same_partition(a, b):
    return len(set(zip(a, b))) == len(set(a)) == len(set(b))


def brute_agglomerative(embeddings, threshold, method, initial=None):
    """Merge the closest pair of clusters (linkage recomputed from the photos) while <= threshold."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    distance = 1.0 - unit @ unit.T
    combine = {"average": np.mean, "single": np.min, "complete": np.max}[method]
    clusters = {}
    for index in range(len(embeddings)):
        key = ("seed", initial[index]) if initial is not None and initial[index] >= 0 else index
        clusters.setdefault(key, []).append(index)
    clusters = list(clusters.values())
    while len(clusters) > 1:
        best = min((combine(distance[np.ix_(a, b)]), i, j)
                   for i, a in enumerate(clusters) for j, b in enumerate(clusters) if i < j)
        if best[0] > threshold:
            break
        _, i, j = best
        clusters[i] = clusters[i] + clusters.pop(j)
    labels = np.empty(len(embeddings), np.int64)
    for number, members in enumerate(sorted(clusters, key=min)):
        labels[members] = number
    return labels


@pytest.mark.parametrize("method", album.LINKAGES)
@pytest.mark.parametrize("seed", range(6))
def test_scipy_clustering_matches_a_brute_force_reference(method, seed):
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(int(rng.integers(2, 20)), 4))
    for threshold in (0.2, 0.5, 0.9, 1.3):
        expected = brute_agglomerative(embeddings, threshold, method)
        np.testing.assert_array_equal(album.agglomerative(embeddings, threshold, method), expected)
        initial = rng.integers(-1, 3, len(embeddings))  # -1: a new photo, not yet in an album
        expected = brute_agglomerative(embeddings, threshold, method, initial)
        np.testing.assert_array_equal(album.agglomerative(embeddings, threshold, method, initial), expected)


def test_clustering_edge_cases():
    assert album.agglomerative(np.zeros((0, 3)), 0.5).shape == (0,)
    np.testing.assert_array_equal(album.agglomerative(np.ones((1, 3)), 0.5), [0])
    # Labels are numbered by first photo: the same partition always has the same labels.
    embeddings = np.array([[1.0, 0], [0, 1], [1, 0.01], [0.01, 1]])
    np.testing.assert_array_equal(album.agglomerative(embeddings, 0.1), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="linkage"):
        album.agglomerative(embeddings, 0.1, "ward")


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


def counts(before, after, **kwargs):
    c = album.breakage_counts(before, after, **kwargs)
    return c["albums"], c["mixed"], c["disappeared"], c["split"]


def test_breakage_of_a_mixed_example():
    before = [0, 0, 0, 1, 1, 2, 2, 3, 3, 4]
    after = [5, 5, 6, 6, 6, 7, 8, 9, 9, 9]
    # Album 0 continues in 5 and leaves one of its three photos in 6 (album-sized): split.
    # Album 1 continues in 6, which also holds album 0's photo: mixed. Album 2 falls apart
    # into singletons: disappeared. Album 3 continues in 9 with the unclustered photo 4: growth.
    assert counts(before, after) == (4, 1, 1, 1)


def test_unclustered_photo_joining_an_album_is_growth():
    assert counts([0, 0, 0, 1], [0, 0, 0, 0]) == (1, 0, 0, 0)
    assert counts([0, 0, 0, 1], [0, 0, 0, 0], min_size=1) == (2, 1, 1, 0)  # then 1 is an album


def test_two_albums_merged_one_continues_mixed_the_other_disappears():
    # A tie: either album may continue in the merged cluster; the counts are the same.
    assert counts([0, 0, 1, 1], [0, 0, 0, 0]) == (2, 1, 1, 0)
    assert counts([0, 0, 1, 1, 1], [0, 0, 0, 0, 0]) == (2, 1, 1, 0)


def test_album_dissolved_into_singletons_disappears():
    assert counts([0, 0, 0, 1, 1], [0, 1, 2, 3, 3]) == (2, 0, 1, 0)


def test_split_needs_a_substantial_share_in_another_album_sized_cluster():
    assert counts([0] * 4, [0, 0, 1, 1]) == (1, 0, 0, 1)
    assert counts([0] * 4, [0, 0, 1, 1], split_share=0.6) == (1, 0, 0, 0)
    assert counts([0] * 8, [0] * 6 + [1] * 2) == (1, 0, 0, 1)  # 2 of 8 = the default 0.25
    assert counts([0] * 8, [0] * 6 + [1] * 2, split_share=0.3) == (1, 0, 0, 0)
    # A photo that becomes unclustered is a smaller album, not a split.
    assert counts([0] * 4, [0, 0, 0, 1]) == (1, 0, 0, 0)


def test_renumbered_clusters_are_not_breakage():
    assert counts([0, 0, 1, 1], [1, 1, 0, 0]) == (2, 0, 0, 0)
    assert counts([7, 7, 7, 3, 3], [2, 2, 2, 9, 9]) == (2, 0, 0, 0)


def test_ties_prefer_the_purer_continuation():
    # A = photos 0-3, B = 4-6. New: X = {0, 1, 4}, Y = {2, 3}, Z = {5, 6}. A shares 2 photos
    # with X and with Y; both matchings share 4 photos, but A -> Y keeps A's album free of B.
    before = [0, 0, 0, 0, 1, 1, 1]
    after = [0, 0, 1, 1, 0, 2, 2]
    assert counts(before, after) == (2, 0, 0, 2)  # A: half in X; B: a third in X
    assert counts(before, [2, 2, 0, 0, 2, 1, 1]) == (2, 0, 0, 2)


def test_the_issue_reproducers():
    assert counts([0, 0, 0, 1], [0, 0, 0, 0], min_size=2)[1] == 0
    assert counts([5, 5, 0, 1], [0, 1, 0, 1]) == counts([0, 0, 5, 6], [0, 1, 0, 1])


def test_breakage_rates_and_length_check():
    rates = album.breakage([0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1, 1])
    assert (rates["mixed_rate"], rates["disappeared_rate"], rates["split_rate"]) == pytest.approx((1 / 3, 1 / 3, 0))
    assert album.breakage([], [])["albums"] == 0
    with pytest.raises(ValueError, match="same photos"):
        album.breakage_counts([0, 0], [0, 0, 0])


def relabelled(labels, values):
    """The same partition with each cluster renamed to a distinct value from ``values``."""
    names = {}
    for label in labels:
        names.setdefault(label, values[len(names)])
    return [names[label] for label in labels]


partitions = st.integers(1, 14).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 4), min_size=n, max_size=n), st.lists(st.integers(0, 5), min_size=n, max_size=n)))
names = st.lists(st.integers(-1000, 1000), min_size=14, max_size=14, unique=True)


@settings(max_examples=300, deadline=None)
@given(partitions, names, names, st.integers(1, 3), st.sampled_from([0.1, 0.25, 0.5]))
def test_breakage_does_not_depend_on_cluster_numbering(pair, old_names, new_names, min_size, share):
    before, after = pair
    expected = counts(before, after, min_size=min_size, split_share=share)
    assert counts(relabelled(before, old_names), relabelled(after, new_names),
                  min_size=min_size, split_share=share) == expected
    albums, mixed, disappeared, split = expected
    assert albums == sum(before.count(c) >= min_size for c in set(before))
    assert max(mixed, disappeared, split) <= albums
    assert counts(before, relabelled(before, new_names), min_size=min_size) == (albums, 0, 0, 0)


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
