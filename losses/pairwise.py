"""The base of pair, triplet and contrastive losses, and the batch geometry they share.

These losses take embeddings (B, D), L2-normalise them (so they are scale
invariant) and compare every pair in the batch. Masks are dense (B, B) booleans:
no gathers or dynamic shapes, so they compile under XLA.
"""

from __future__ import annotations

import abc

from keras import ops

from losses.base import EPSILON, FaceLoss, as_float32
from trainer.normalize import l2_normalize

# Stands in for -inf in masked reductions: -inf would make 0 * NaN gradients.
VERY_NEGATIVE = -1e9


def cosine_similarity_matrix(unit):
    return ops.matmul(unit, ops.transpose(unit))


def euclidean_distance_matrix(unit, squared=False):
    """Distances between unit vectors: ||a - b||^2 = 2 - 2 a.b (floored so sqrt has a gradient)."""
    squared_distance = ops.maximum(2.0 - 2.0 * cosine_similarity_matrix(unit), 0.0)
    if squared:
        return squared_distance
    return ops.sqrt(ops.maximum(squared_distance, 1e-12))


def pair_masks(labels):
    """(positive, negative): same label other sample, different label; (B, B) booleans."""
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
    not_self = ops.logical_not(ops.eye(ops.shape(labels)[0], dtype="bool"))
    return ops.logical_and(same, not_self), ops.logical_not(same)


def masked_logsumexp(x, mask, add_one=False, axis=1):
    """log(sum over mask of exp(x)) (+1 inside the log when ``add_one``); 0 where the mask is empty."""
    x = ops.where(mask, x, VERY_NEGATIVE)
    if add_one:
        x = ops.concatenate([x, ops.zeros_like(ops.take(x, [0], axis=axis))], axis=axis)
    return ops.where(ops.any(mask, axis=axis), ops.logsumexp(x, axis=axis), 0.0)


def masked_max(x, mask, axis=1):
    return ops.max(ops.where(mask, x, VERY_NEGATIVE), axis=axis)


def masked_min(x, mask, axis=1):
    return ops.min(ops.where(mask, x, -VERY_NEGATIVE), axis=axis)


def spread_total(per_anchor_sum, count):
    """Per-sample values whose batch mean is ``sum(per_anchor_sum) / count`` (0 when count is 0)."""
    batch = ops.cast(ops.shape(per_anchor_sum)[0], "float32")
    return per_anchor_sum * (batch / ops.maximum(ops.cast(count, "float32"), 1.0))


class PairLoss(FaceLoss, metaclass=abc.ABCMeta):
    """Embeddings in, per-sample values out; subclasses implement :meth:`pair_loss`."""

    input_kind = "embeddings"
    scale_invariant = True

    @abc.abstractmethod
    def pair_loss(self, labels, unit):
        """Per-sample loss (B,) from int labels (B,) and unit embeddings (B, D)."""

    def embeddings(self, y_pred):
        if isinstance(y_pred, dict):
            raise ValueError(f"{self.describe()} takes embeddings (batch, dim), not a head's dict")
        x = as_float32(y_pred)
        if len(x.shape) != 2:
            raise ValueError(f"{self.describe()} expects embeddings of shape (batch, dim), "
                             f"got {tuple(x.shape)}")
        return l2_normalize(x, epsilon=EPSILON ** 2)

    def call(self, y_true, y_pred):
        unit = self.embeddings(y_pred)
        labels = self.int_labels(y_true)
        self.check_batch(labels, unit, "embeddings")
        return self.pair_loss(labels, unit)
