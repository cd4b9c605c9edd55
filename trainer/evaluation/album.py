"""Per-family album clustering: what users see when a model sorts their photos into people.

Each family's photos are clustered on their own, agglomeratively on cosine
distance (1 − cos) of L2-normalised embeddings (``scipy.cluster.hierarchy``),
merging while the linkage distance is at most ``threshold`` (a number, or
``auto``: the model's own verification threshold, so models are compared each
at its operating point). Photos arrive in two periods (each identity's first
images, then the rest); period 2 is clustered either from scratch ("full") or
incrementally, starting from the period-1 albums plus the new photos as
singletons, as the product does when new photos arrive (albums may grow or
merge, never split).

Reported, against ground truth: pairwise precision/recall/F1 (pairs of photos
put together) and BCubed precision/recall/F (per photo). Without ground
truth, between two clusterings of the same photos (two periods or two models):
albums are clusters of at least ``min_size`` photos, and each continues in the
new cluster a maximum-weight one-to-one matching (by shared photos) gives it.
The share of albums **mixed** (the continuation also holds another album's
photos; unclustered photos joining it are growth), **split** (a substantial
share of its photos sits in other album-sized clusters) or **disappeared** (no
continuation) does not depend on how clusters are numbered. For a model
update, also the verification accuracy when one photo of a pair is embedded by
the old model and the other by the new one (stored embeddings stay comparable?).
"""

from __future__ import annotations

import numpy as np

from trainer.normalize import l2_normalize_numpy
from trainer.registry import EVALUATORS

LINKAGES = ("average", "single", "complete")


# -- clustering ----------------------------------------------------------------------

def cosine_distances(embeddings: np.ndarray) -> np.ndarray:
    normalised = l2_normalize_numpy(embeddings, axis=1)
    return np.clip(1.0 - normalised @ normalised.T, 0.0, 2.0)


def agglomerative(embeddings: np.ndarray, threshold: float, linkage: str = "average",
                  initial: np.ndarray | None = None) -> np.ndarray:
    """Cluster labels 0…K-1 (numbered by first member). ``initial``: starting clusters (-1 = singleton).

    Merging stops at the first linkage distance above ``threshold``; with ``initial``
    the given clusters are kept whole and grow or merge from there (incremental mode).
    """
    from scipy.cluster import hierarchy
    from scipy.spatial.distance import squareform

    if linkage not in LINKAGES:
        raise ValueError(f"linkage {linkage!r} is not one of {', '.join(LINKAGES)}")
    count = len(embeddings)
    if count == 0:
        return np.zeros(0, np.int64)
    if count == 1:
        return np.zeros(1, np.int64)
    distances = cosine_distances(np.asarray(embeddings, np.float64))
    cut = float(threshold)
    if initial is not None:
        # Incremental mode through one ordinary linkage: pairs inside a starting cluster get
        # distance 0 and every other pair is shifted up by 1, so each starting cluster is
        # complete (at height 0) before any other merge. Average, single and complete linkage
        # of two clusters only read the pairs *between* them, so every later merge sees the
        # true distances plus the same shift; cutting at threshold + 1 is the plain rule.
        initial = np.asarray(initial)
        same = (initial[:, None] == initial[None, :]) & (initial[:, None] >= 0)
        distances = np.where(same, 0.0, distances + 1.0)
        cut += 1.0
    np.fill_diagonal(distances, 0.0)
    tree = hierarchy.linkage(squareform(distances, checks=False), method=linkage)
    # Monotone linkages: the dendrogram cut at ``cut`` is "merge while the distance <= cut".
    return first_member_order(hierarchy.fcluster(tree, cut, criterion="distance"))


def first_member_order(labels) -> np.ndarray:
    """Relabel a partition 0…K-1 in order of each cluster's first photo (label values do not matter)."""
    _, first, inverse = np.unique(np.asarray(labels), return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


# -- metrics with ground truth --------------------------------------------------------

def _pairs(n):
    return n * (n - 1) / 2.0


def contingency(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    _, p = np.unique(predicted, return_inverse=True)
    _, t = np.unique(truth, return_inverse=True)
    table = np.zeros((p.max() + 1 if len(p) else 0, t.max() + 1 if len(t) else 0), np.int64)
    np.add.at(table, (p, t), 1)
    return table


def pair_counts(predicted, truth) -> tuple[float, float, float]:
    """(pairs together in both, pairs together in predicted, pairs together in truth)."""
    table = contingency(np.asarray(predicted), np.asarray(truth))
    return (float(_pairs(table).sum()), float(_pairs(table.sum(1)).sum()),
            float(_pairs(table.sum(0)).sum()))


def f_score(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def pairwise_scores(predicted, truth) -> dict:
    both, in_predicted, in_truth = pair_counts(predicted, truth)
    return _pairwise_from_counts(both, in_predicted, in_truth)


def _pairwise_from_counts(both, in_predicted, in_truth) -> dict:
    precision = both / in_predicted if in_predicted else 1.0
    recall = both / in_truth if in_truth else 1.0
    return {"pairwise_precision": precision, "pairwise_recall": recall,
            "pairwise_f1": f_score(precision, recall)}


def bcubed_per_item(predicted, truth) -> tuple[np.ndarray, np.ndarray]:
    """Per-item BCubed precision and recall (Bagga & Baldwin 1998; Amigó et al. 2009)."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    _, p = np.unique(predicted, return_inverse=True)
    _, t = np.unique(truth, return_inverse=True)
    table = contingency(predicted, truth)
    overlap = table[p, t].astype(np.float64)
    return overlap / table.sum(1)[p], overlap / table.sum(0)[t]


def bcubed_scores(predicted, truth) -> dict:
    precision, recall = bcubed_per_item(predicted, truth)
    p, r = float(np.mean(precision)), float(np.mean(recall))
    return {"bcubed_precision": p, "bcubed_recall": r, "bcubed_f": f_score(p, r)}


# -- breakage without ground truth -----------------------------------------------------

def continuation(table: np.ndarray, albums: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Each album's continuing new cluster (column index), or -1: a maximum-weight one-to-one
    matching of albums (rows) and album-sized new clusters (columns) by shared photos.

    Among matchings that share the most photos, the one whose continuations hold the fewest
    photos of *other* albums wins; rows and columns are in first-photo order, so whatever
    tie is left is settled by where the photos are, never by how clusters are numbered.
    """
    from scipy.optimize import linear_sum_assignment

    result = np.full(len(table), -1, np.int64)
    rows, columns = np.flatnonzero(albums), np.flatnonzero(candidates)
    if len(rows) == 0 or len(columns) == 0:
        return result
    shared = table[np.ix_(rows, columns)]
    foreign = table[albums].sum(0)[columns][None, :] - shared  # other albums' photos there
    # Lexicographic (shared, -foreign) as one integer weight: the foreign photos of all
    # matched columns together are fewer than the total, so one shared photo outweighs them.
    weight = shared * (int(table.sum()) + 1) - foreign
    matched_rows, matched_columns = linear_sum_assignment(np.where(shared > 0, weight, 0), maximize=True)
    keep = shared[matched_rows, matched_columns] > 0  # a zero-weight pair is no continuation
    result[rows[matched_rows[keep]]] = columns[matched_columns[keep]]
    return result


def album_outcomes(before, after, min_size: int = 2, split_share: float = 0.25) -> list[dict]:
    """What happens to each previous album in a new clustering of the same photos (the rules of
    ``breakage_counts``), for showing them one by one.

    One dict per album, in first-photo order of ``before``: ``cluster`` (its label in
    ``first_member_order(before)``), ``continuation`` (the label in ``first_member_order(after)``
    of the new cluster that continues it, or None), and the flags ``mixed``, ``split``,
    ``disappeared``.
    """
    before, after = first_member_order(before), first_member_order(after)
    if len(before) != len(after):
        raise ValueError(f"the clusterings cover {len(before)} and {len(after)} photos; "
                         "breakage compares two clusterings of the same photos")
    table = contingency(before, after)  # rows: before, columns: after, both in first-photo order
    albums = table.sum(1) >= min_size
    candidates = table.sum(0) >= min_size
    matched = continuation(table, albums, candidates)
    album_photos = table[albums].sum(0)  # per new cluster, photos that were in some album
    outcomes = []
    for row in np.flatnonzero(albums):
        column = int(matched[row])
        if column < 0:
            outcomes.append({"cluster": int(row), "continuation": None, "mixed": False, "split": False,
                             "disappeared": True})
            continue
        elsewhere = table[row, candidates].sum() - table[row, column]
        outcomes.append({"cluster": int(row), "continuation": column,
                         "mixed": bool(album_photos[column] > table[row, column]),
                         "split": bool(elsewhere > 0 and elsewhere >= split_share * table[row].sum()),
                         "disappeared": False})
    return outcomes


def breakage_counts(before, after, min_size: int = 2, split_share: float = 0.25) -> dict:
    """How a new clustering of the same photos treats the previous albums.

    Albums are previous clusters of at least ``min_size`` photos; each continues in the new
    cluster it is matched to (``continuation``). An album is **mixed** when its continuation
    also holds photos of another album (photos that were not in any album joining it are
    growth), **split** when at least ``split_share`` of its photos land outside the
    continuation in other album-sized new clusters, **disappeared** when nothing continues it.
    """
    outcomes = album_outcomes(before, after, min_size, split_share)
    return {"albums": len(outcomes), **{key: sum(o[key] for o in outcomes)
                                        for key in ("mixed", "disappeared", "split")}}


def breakage_rates(counts: dict) -> dict:
    albums = max(counts["albums"], 1)
    return {**counts, **{f"{k}_rate": counts[k] / albums for k in ("mixed", "disappeared", "split")}}


def breakage(before, after, min_size: int = 2, split_share: float = 0.25) -> dict:
    return breakage_rates(breakage_counts(before, after, min_size, split_share))


def _sum_counts(parts: list[dict]) -> dict:
    return {k: sum(p[k] for p in parts) for k in ("albums", "mixed", "disappeared", "split")}


# -- albums over families ----------------------------------------------------------------

def period_of(labels: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """1 for each identity's first ``fraction`` of images (in order), else 2 (at least one each)."""
    labels = np.asarray(labels)
    period = np.full(len(labels), 2, np.int64)
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        first = min(max(int(round(fraction * len(index))), 1), max(len(index) - 1, 1))
        period[index[:first]] = 1
    return period


class _Tally:
    """Micro-averaged clustering scores over families."""

    def __init__(self):
        self.pairs = np.zeros(3)
        self.bcubed_p, self.bcubed_r = [], []
        self.clusters = 0
        self.identities = 0
        self.breakage = []

    def add(self, predicted, truth):
        self.pairs += pair_counts(predicted, truth)
        p, r = bcubed_per_item(predicted, truth)
        self.bcubed_p.append(p)
        self.bcubed_r.append(r)
        self.clusters += len(np.unique(predicted))
        self.identities += len(np.unique(truth))

    def result(self) -> dict:
        p = float(np.mean(np.concatenate(self.bcubed_p))) if self.bcubed_p else 1.0
        r = float(np.mean(np.concatenate(self.bcubed_r))) if self.bcubed_r else 1.0
        result = {**_pairwise_from_counts(*self.pairs), "bcubed_precision": p, "bcubed_recall": r,
                  "bcubed_f": f_score(p, r), "clusters": self.clusters, "identities": self.identities}
        if self.breakage:
            result["breakage"] = breakage_rates(_sum_counts(self.breakage))
        return result


def album_report(embeddings: np.ndarray, labels: np.ndarray, families: np.ndarray,
                 threshold: float = 0.5, linkage: str = "average", period_fraction: float = 0.5,
                 min_album: int = 2, split_share: float = 0.25) -> dict:
    """Cluster each family in two periods; scores per period and breakage from period 1.

    ``families``: the family of each image (same length as ``labels``).
    """
    embeddings, labels, families = np.asarray(embeddings), np.asarray(labels), np.asarray(families)
    period = period_of(labels, period_fraction)
    first, incremental, full = _Tally(), _Tally(), _Tally()
    for family in np.unique(families):
        index = np.flatnonzero(families == family)
        emb, truth, when = embeddings[index], labels[index], period[index]
        old = when == 1
        albums = agglomerative(emb[old], threshold, linkage)
        first.add(albums, truth[old])
        seeds = np.full(len(index), -1)
        seeds[old] = albums
        grown = agglomerative(emb, threshold, linkage, initial=seeds)
        fresh = agglomerative(emb, threshold, linkage)
        for tally, result in ((incremental, grown), (full, fresh)):
            tally.add(result, truth)
            tally.breakage.append(breakage_counts(albums, result[old], min_album, split_share))
    return {"threshold": float(threshold), "linkage": linkage, "families": int(len(np.unique(families))),
            "images": int(len(labels)), "period1": first.result(),
            "period2_incremental": incremental.result(), "period2_full": full.result()}


def model_update_report(old_embeddings: np.ndarray, new_embeddings: np.ndarray, labels, families,
                        threshold: float = 0.5, linkage: str = "average", min_album: int = 2,
                        pairs: int = 3000, seed: int = 0, folds: int = 10, old_threshold: float | None = None,
                        split_share: float = 0.25) -> dict:
    """Old model's albums vs the new model's on the same photos, and cross-model verification.

    ``threshold`` clusters the new model's embeddings, ``old_threshold`` (default: the same)
    the old model's, so each model can cluster at its own operating point.
    """
    from trainer.evaluation.verification import sample_pairs, squared_distances, verification_metrics

    labels, families = np.asarray(labels), np.asarray(families)
    counts = []
    for family in np.unique(families):
        index = np.flatnonzero(families == family)
        old = agglomerative(old_embeddings[index], threshold if old_threshold is None else old_threshold,
                            linkage)
        new = agglomerative(new_embeddings[index], threshold, linkage)
        counts.append(breakage_counts(old, new, min_album, split_share))
    report = {"breakage_old_to_new": breakage_rates(_sum_counts(counts))}
    index_a, index_b, issame = sample_pairs(labels, pairs, seed)
    for name, (a, b) in {"old_old": (old_embeddings, old_embeddings),
                         "new_new": (new_embeddings, new_embeddings),
                         "old_new": (old_embeddings, new_embeddings)}.items():
        if a.shape[1] != b.shape[1]:
            report[f"verification_{name}"] = None  # different embedding sizes cannot be compared
            continue
        distances = squared_distances(a[index_a], b[index_b])
        report[f"verification_{name}"] = verification_metrics(distances, issame, folds)["accuracy"]
    return report


def calibrated_threshold(embeddings: np.ndarray, labels: np.ndarray, pairs: int = 3000, seed: int = 0) -> float:
    """The model's own operating point: the verification threshold (10-fold best squared
    distance of seeded pairs) as a cosine distance (squared distance / 2 on unit vectors)."""
    from trainer.evaluation.verification import sample_pairs, squared_distances, ten_fold_accuracy

    index_a, index_b, issame = sample_pairs(labels, pairs, seed)
    _, _, thresholds = ten_fold_accuracy(squared_distances(embeddings[index_a], embeddings[index_b]), issame)
    return float(np.median(thresholds)) / 2.0


def resolve_threshold(threshold, embeddings, labels, seed: int = 0) -> float:
    """A number, or ``auto`` (``calibrated_threshold``): each model at its own operating point."""
    if str(threshold).lower() == "auto":
        return calibrated_threshold(embeddings, labels, seed=seed)
    return float(threshold)


def family_of_images(labels: np.ndarray, family_by_identity: np.ndarray) -> np.ndarray:
    return np.asarray(family_by_identity)[np.asarray(labels)]


def album_examples(source):
    """(images, labels, families) of the source's held-out identities (or training ones)."""
    from trainer.data.errors import DataError
    from trainer.data.pipeline import materialise

    family_by_identity = source.heldout_families()
    if family_by_identity is None:
        raise DataError(f"{type(source).__name__} has no families for albums; for a folder data set "
                        "set data.families_file (lines 'family,identity')")
    dataset = source.heldout()
    if dataset is None:
        dataset = source.train()
    images, labels = materialise(dataset)
    return images, labels, family_of_images(labels, family_by_identity)


@EVALUATORS.register("album")
class AlbumEvaluator:
    """Album clustering of the source's held-out families (see the module docstring)."""

    def __init__(self, threshold="auto", linkage: str = "average", period_fraction: float = 0.5,
                 min_album: int = 2, batch_size: int = 256, untrained="auto"):
        from trainer.evaluation.verification import untrained_setting

        self.untrained = untrained_setting(untrained)  # the runner reads it (trainer.timings)
        if linkage not in LINKAGES:
            from trainer.registry import ConfigError

            raise ConfigError(f"eval.linkage={linkage!r} is not one of {', '.join(LINKAGES)}")
        self.threshold = threshold if str(threshold).lower() == "auto" else float(threshold)
        self.linkage = linkage
        self.period_fraction = float(period_fraction)
        self.min_album = int(min_album)
        self.batch_size = int(batch_size)

    def evaluate(self, embedding_model, source) -> dict:
        from trainer.evaluation.verification import embed

        images, labels, families = album_examples(source)
        embeddings = embed(embedding_model, images, self.batch_size)
        threshold = resolve_threshold(self.threshold, embeddings, labels)
        return {"album": album_report(embeddings, labels, families, threshold, self.linkage,
                                      self.period_fraction, self.min_album)}
