"""Retrieval metrics of embeddings: precision@1, R-precision, MAP@R, recall@k.

Definitions follow Musgrave, Belongie and Lim, "A Metric Learning Reality
Check" (ECCV 2020). For a query with label y, R is the number of references
labelled y (the query itself excluded when the queries are their own
references). Its neighbours are ranked by cosine similarity, highest first;
equal similarities are ranked by reference index, so the result never depends
on the order a sort happens to visit ties.

- precision@1: the nearest neighbour is labelled y;
- R-precision: share of the first R neighbours labelled y;
- MAP@R: (1/R) · Σ_{i ≤ R} P(i)·rel(i), P(i) the precision of the first i;
- recall@k: at least one of the first k neighbours is labelled y.

Queries with R = 0 (nobody to find) are left out and counted as ``skipped``.
Neighbours are found exactly, in blocks of queries whose similarity rows stay
under ``max_elements`` numbers, so memory never holds an N×N matrix beyond that.
"""

from __future__ import annotations

import numpy as np

from trainer.normalize import l2_normalize_numpy

KS = (1, 5, 10)
MAX_ELEMENTS = 1 << 24  # similarity entries per block of queries (128 MiB of float64)


def normalise(embeddings) -> np.ndarray:
    """Unit rows in float64 (similarities are ranked; float32 ties would reorder them)."""
    return l2_normalize_numpy(np.asarray(embeddings, np.float64), axis=1)


def query_blocks(num_queries: int, num_references: int, max_elements: int = MAX_ELEMENTS):
    """Consecutive query index ranges whose similarity block holds at most ``max_elements``."""
    rows = max(1, int(max_elements) // max(1, int(num_references)))
    return [range(start, min(start + rows, num_queries)) for start in range(0, num_queries, rows)]


def top_k(similarities: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of each row, best first, ties by lower index.

    ``argpartition`` alone picks arbitrarily among ties at the k-th value, so the
    cut is redone by hand: everything above that value, then the lowest-index
    entries equal to it until the row has ``k``.
    """
    rows, columns = similarities.shape
    k = min(int(k), columns)
    if k == 0:
        return np.zeros((rows, 0), np.int64)
    if k < columns:
        kth = np.partition(similarities, columns - k, axis=1)[:, columns - k]
    else:
        kth = similarities.min(axis=1)
    above = similarities > kth[:, None]
    equal = similarities == kth[:, None]
    missing = k - above.sum(axis=1)
    chosen = above | (equal & (np.cumsum(equal, axis=1) <= missing[:, None]))
    # Row-major nonzero lists each row's columns in increasing index order.
    columns_of = np.nonzero(chosen)[1].reshape(rows, k)
    values = np.take_along_axis(similarities, columns_of, axis=1)
    # A stable sort keeps the lower index first among equal similarities.
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(columns_of, order, axis=1)


def reference_counts(query_labels, reference_labels, self_reference: bool) -> np.ndarray:
    """R of each query: references sharing its label, itself not counted."""
    values, counts = np.unique(np.asarray(reference_labels), return_counts=True)
    lookup = dict(zip(values.tolist(), counts.tolist()))
    r = np.asarray([lookup.get(label, 0) for label in np.asarray(query_labels).tolist()], np.int64)
    return np.maximum(r - int(self_reference), 0)


def ranked_relevance(query_embeddings, query_labels, reference_embeddings=None, reference_labels=None,
                     min_depth: int = 0, max_elements: int = MAX_ELEMENTS):
    """Yield ``(relevance (B, K) bool, R (B,) int)`` per block of queries.

    ``relevance[i, j]``: the (j+1)-th neighbour of query i has its label. Without
    references the queries are their own references and each query's own entry
    is never a neighbour. ``K`` is the block's largest R, at least ``min_depth``
    (and at most the number of candidates).
    """
    queries = normalise(query_embeddings)
    query_labels = np.asarray(query_labels)
    self_reference = reference_embeddings is None
    references = queries if self_reference else normalise(reference_embeddings)
    reference_labels = query_labels if self_reference else np.asarray(reference_labels)
    r_all = reference_counts(query_labels, reference_labels, self_reference)
    candidates = len(references) - int(self_reference)
    for block in query_blocks(len(queries), len(references), max_elements):
        index = np.arange(block.start, block.stop)
        similarities = queries[index] @ references.T
        if self_reference:
            similarities[np.arange(len(index)), index] = -np.inf
        r = r_all[index]
        depth = min(max(int(r.max(initial=0)), int(min_depth)), candidates)
        neighbours = top_k(similarities, depth)
        yield reference_labels[neighbours] == query_labels[index, None], r


def per_query(relevance: np.ndarray, r: np.ndarray, ks=KS) -> dict:
    """Each metric for each query of a block that has something to find (R > 0)."""
    keep = r > 0
    relevance, r = relevance[keep], r[keep]
    depth = relevance.shape[1]
    ranks = np.arange(1, depth + 1)
    hits = relevance & (ranks[None, :] <= r[:, None])  # relevant and within the first R
    precision_at_i = np.cumsum(hits, axis=1) / ranks[None, :]
    values = {"precision_at_1": relevance[:, 0].astype(np.float64) if depth else np.zeros(len(r)),
              "r_precision": hits.sum(axis=1) / r,
              "map_at_r": np.sum(precision_at_i * hits, axis=1) / r}
    for k in ks:
        values[f"recall_at_{k}"] = relevance[:, :int(k)].any(axis=1).astype(np.float64)
    return values


def retrieval_metrics(query_embeddings, query_labels, reference_embeddings=None, reference_labels=None,
                      ks=KS, max_elements: int = MAX_ELEMENTS) -> dict:
    """Precision@1, R-precision, MAP@R and recall@k of a query set against references.

    With no references the queries are their own (self-matches excluded).
    Returns means over the queries that have something to find, plus counts.
    """
    ks = tuple(sorted({int(k) for k in ks}))
    keys = ("precision_at_1", "r_precision", "map_at_r", *(f"recall_at_{k}" for k in ks))
    parts = {key: [] for key in keys}
    for relevance, r in ranked_relevance(query_embeddings, query_labels, reference_embeddings,
                                         reference_labels, max(ks, default=0), max_elements):
        for key, values in per_query(relevance, r, ks).items():
            parts[key].append(values)
    # Per-query values are averaged once at the end, so block sizes cannot change the rounding.
    values = {key: np.concatenate(chunks) if chunks else np.zeros(0) for key, chunks in parts.items()}
    used = len(values["precision_at_1"])
    mean = {key: float(np.mean(v)) if used else float("nan") for key, v in values.items()}
    num_queries = len(query_labels)
    return {"precision_at_1": mean["precision_at_1"], "r_precision": mean["r_precision"],
            "map_at_r": mean["map_at_r"], "recall_at_k": {str(k): mean[f"recall_at_{k}"] for k in ks},
            "queries": int(used), "skipped": int(num_queries - used),
            "references": int(num_queries if reference_embeddings is None else len(reference_labels)),
            "self_reference": reference_embeddings is None}
