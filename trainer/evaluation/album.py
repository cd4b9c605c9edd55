"""Per-family album clustering: what users see when a model sorts their photos into people.

Each family's photos are clustered on their own, agglomeratively on cosine
distance (1 − cos) of L2-normalised embeddings, merging while the linkage
distance is at most ``threshold`` (a number, or ``auto``: the model's own
verification threshold, so models are compared each at its operating point). Photos arrive in two periods (each
identity's first images, then the rest); period 2 is clustered either from
scratch ("full") or incrementally, starting from the period-1 albums plus the
new photos as singletons, as the product does when new photos arrive (albums
may grow or merge, never split).

Reported, against ground truth: pairwise precision/recall/F1 (pairs of photos
put together) and BCubed precision/recall/F (per photo). Without ground
truth, between two clusterings of the same photos (two periods or two models):
the share of previous albums that were **mixed** (share a new cluster with
another album's photos), **disappeared** (no new cluster is mostly theirs) or
**split** (spread over several new clusters). For a model update, also the
verification accuracy when one photo of a pair is embedded by the old model
and the other by the new one (stored embeddings stay comparable?).
"""

from __future__ import annotations

import numpy as np

from trainer.registry import EVALUATORS

LINKAGES = ("average", "single", "complete")


# -- clustering ----------------------------------------------------------------------

def cosine_distances(embeddings: np.ndarray) -> np.ndarray:
    normalised = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return np.clip(1.0 - normalised @ normalised.T, 0.0, 2.0)


def agglomerative(embeddings: np.ndarray, threshold: float, linkage: str = "average",
                  initial: np.ndarray | None = None) -> np.ndarray:
    """Cluster labels 0…K-1 (numbered by first member). ``initial``: starting clusters (-1 = singleton)."""
    if linkage not in LINKAGES:
        raise ValueError(f"linkage {linkage!r} is not one of {', '.join(LINKAGES)}")
    count = len(embeddings)
    if count == 0:
        return np.zeros(0, np.int64)
    items = cosine_distances(np.asarray(embeddings, np.float64))
    members = _initial_clusters(count, initial)
    sizes = np.array([len(m) for m in members], np.float64)
    # Cluster-to-cluster linkage distances, from the item distances.
    combine = {"average": np.mean, "single": np.min, "complete": np.max}[linkage]
    distance = np.array([[combine(items[np.ix_(a, b)]) for b in members] for a in members])
    np.fill_diagonal(distance, np.inf)
    alive = np.ones(len(members), bool)
    while alive.sum() > 1:
        masked = np.where(alive[:, None] & alive[None, :], distance, np.inf)
        flat = int(np.argmin(masked))
        i, j = divmod(flat, len(members))
        if masked[i, j] > threshold:
            break
        i, j = min(i, j), max(i, j)
        # Lance–Williams update: the merged cluster keeps index i.
        if linkage == "average":
            merged = (sizes[i] * distance[i] + sizes[j] * distance[j]) / (sizes[i] + sizes[j])
        elif linkage == "single":
            merged = np.minimum(distance[i], distance[j])
        else:
            merged = np.maximum(distance[i], distance[j])
        distance[i, :] = distance[:, i] = merged
        distance[i, i] = np.inf
        members[i] = members[i] + members[j]
        sizes[i] += sizes[j]
        alive[j] = False
    labels = np.empty(count, np.int64)
    for cluster, index in enumerate(sorted((members[c] for c in np.flatnonzero(alive)), key=min)):
        labels[index] = cluster
    return labels


def _initial_clusters(count: int, initial) -> list[list[int]]:
    if initial is None:
        return [[i] for i in range(count)]
    initial = np.asarray(initial)
    groups: dict[int, list[int]] = {}
    singletons = []
    for index, label in enumerate(initial.tolist()):
        if label < 0:
            singletons.append([index])
        else:
            groups.setdefault(label, []).append(index)
    return list(groups.values()) + singletons


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

def breakage_counts(before, after, min_size: int = 2) -> dict:
    """Counts of previous clusters (of at least ``min_size`` photos) mixed, disappeared, split."""
    table = contingency(np.asarray(before), np.asarray(after))  # rows: before, columns: after
    sizes = table.sum(1)
    considered = sizes >= min_size
    present = table > 0
    split = present.sum(1) > 1
    others_in_column = present.sum(0) > 1
    mixed = (present & others_in_column[None, :]).any(1)
    # The album that "continues" in each new cluster is the one with most photos there.
    continued = np.zeros(len(table), bool)
    if table.size:
        continued[np.argmax(table, axis=0)] = True
    return {"albums": int(considered.sum()), "mixed": int((mixed & considered).sum()),
            "disappeared": int((~continued & considered).sum()), "split": int((split & considered).sum())}


def breakage_rates(counts: dict) -> dict:
    albums = max(counts["albums"], 1)
    return {**counts, **{f"{k}_rate": counts[k] / albums for k in ("mixed", "disappeared", "split")}}


def breakage(before, after, min_size: int = 2) -> dict:
    return breakage_rates(breakage_counts(before, after, min_size))


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
                 min_album: int = 2) -> dict:
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
            tally.breakage.append(breakage_counts(albums, result[old], min_album))
    return {"threshold": float(threshold), "linkage": linkage, "families": int(len(np.unique(families))),
            "images": int(len(labels)), "period1": first.result(),
            "period2_incremental": incremental.result(), "period2_full": full.result()}


def model_update_report(old_embeddings: np.ndarray, new_embeddings: np.ndarray, labels, families,
                        threshold: float = 0.5, linkage: str = "average", min_album: int = 2,
                        pairs: int = 3000, seed: int = 0, folds: int = 10) -> dict:
    """Old model's albums vs the new model's on the same photos, and cross-model verification."""
    from trainer.evaluation.verification import sample_pairs, squared_distances, verification_metrics

    labels, families = np.asarray(labels), np.asarray(families)
    counts = []
    for family in np.unique(families):
        index = np.flatnonzero(families == family)
        old = agglomerative(old_embeddings[index], threshold, linkage)
        new = agglomerative(new_embeddings[index], threshold, linkage)
        counts.append(breakage_counts(old, new, min_album))
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
                 min_album: int = 2, batch_size: int = 256):
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
