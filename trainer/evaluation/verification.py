"""Face verification, LFW protocol: flip-summed embeddings, 10-fold threshold accuracy.

Pairs are scored by the squared Euclidean distance between L2-normalised
embeddings (0 … 4); for each fold the best threshold on the other nine folds
(0.00, 0.01, … 3.99) is applied to it, and the mean ± std over folds is reported.
"""

from __future__ import annotations

import numpy as np

from trainer.registry import EVALUATORS

THRESHOLDS = np.arange(0.0, 4.0, 0.01)


def embed(model, images: np.ndarray, batch_size: int = 256, flip: bool = True) -> np.ndarray:
    """L2-normalised embeddings; with ``flip`` the image's and its mirror's are summed first."""
    features = _predict(model, images, batch_size)
    if flip:
        features = features + _predict(model, images[:, :, ::-1], batch_size)
    return l2_normalise(features)


def _predict(model, images, batch_size):
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], np.float32)
        outputs.append(np.asarray(model(batch, training=False), np.float64))
    return np.concatenate(outputs) if outputs else np.zeros((0, 1))


def l2_normalise(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def sample_pairs(labels: np.ndarray, num_pairs: int, seed: int = 0):
    """``num_pairs`` positive and as many negative index pairs (seeded), plus ``issame``.

    Positives are two different images of one identity; negatives two images of
    two different identities.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    by_identity = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    usable = [members for members in by_identity if len(members) >= 2]
    if not usable or len(by_identity) < 2:
        raise ValueError("verification needs at least two identities with two images each")
    positives = []
    for _ in range(num_pairs):
        members = usable[rng.integers(len(usable))]
        a, b = rng.choice(members, size=2, replace=False)
        positives.append((a, b))
    negatives = []
    while len(negatives) < num_pairs:
        a, b = rng.integers(len(labels), size=2)
        if labels[a] != labels[b]:
            negatives.append((a, b))
    # Interleaved (positive, negative, ...) so every contiguous fold holds both kinds.
    pairs = np.asarray([p for pair in zip(positives, negatives) for p in pair], np.int64)
    issame = np.tile([True, False], num_pairs)
    return pairs[:, 0], pairs[:, 1], issame


def squared_distances(embeddings_a: np.ndarray, embeddings_b: np.ndarray) -> np.ndarray:
    return np.sum(np.square(embeddings_a - embeddings_b), axis=1)


def accuracy_at(threshold: float, distances: np.ndarray, issame: np.ndarray) -> float:
    return float(np.mean((distances < threshold) == issame))


def fold_indices(count: int, folds: int):
    """Contiguous folds as in the LFW protocol (pairs are not shuffled first)."""
    return np.array_split(np.arange(count), folds)


def ten_fold_accuracy(distances: np.ndarray, issame: np.ndarray, folds: int = 10,
                      thresholds: np.ndarray = THRESHOLDS):
    """(mean accuracy, std, best threshold per fold)."""
    distances = np.asarray(distances, np.float64)
    issame = np.asarray(issame, bool)
    # accuracy[t, i]: is pair i classified right at threshold t (computed once, vectorised).
    correct = (distances[None, :] < thresholds[:, None]) == issame[None, :]
    accuracies, best = [], []
    for test in fold_indices(len(issame), folds):
        train = np.ones(len(issame), bool)
        train[test] = False
        threshold_index = int(np.argmax(correct[:, train].mean(axis=1)))
        best.append(float(thresholds[threshold_index]))
        accuracies.append(float(correct[threshold_index, test].mean()))
    return float(np.mean(accuracies)), float(np.std(accuracies)), best


def verify_pairs(embeddings: np.ndarray, index_a, index_b, issame, folds: int = 10) -> dict:
    """Metrics of the pairs ``(index_a[i], index_b[i])`` of one embedding matrix."""
    distances = squared_distances(embeddings[index_a], embeddings[index_b])
    mean, std, thresholds = ten_fold_accuracy(distances, issame, folds)
    return {"accuracy": mean, "accuracy_std": std, "threshold": float(np.median(thresholds)),
            "pairs": int(len(issame))}


@EVALUATORS.register("verification")
class VerificationEvaluator:
    """Held-out identities of the data source, sampled into positive/negative pairs."""

    def __init__(self, pairs: int = 3000, folds: int = 10, seed: int = 0, batch_size: int = 256,
                 bin_files=()):
        self.pairs = int(pairs)
        self.folds = int(folds)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.bin_files = list(bin_files or [])

    def evaluate(self, embedding_model, source) -> dict:
        from trainer.data.pipeline import materialise

        results = {}
        heldout = source.heldout()
        if heldout is not None:
            images, labels = materialise(heldout)
            embeddings = embed(embedding_model, images, self.batch_size)
            index_a, index_b, issame = sample_pairs(labels, self.pairs, self.seed)
            results["heldout"] = verify_pairs(embeddings, index_a, index_b, issame, self.folds)
        return results
