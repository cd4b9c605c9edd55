"""The margin-loss base: softmax cross-entropy over scaled, margin-modified cosines.

Every margin loss (ArcFace, CosFace, AdaFace, ...) differs from plain softmax on
cosines only in how the *target* class's cosine is changed, so a subclass
overrides one hook, :meth:`MarginLoss.target_logit`. A few papers also change
the scale (AdaCos), the non-target logits (CurricularFace) or add a term
(MagFace); those have their own hooks with harmless defaults.

The maths runs in float32 whatever the mixed-precision policy, the target is
picked with a dense one-hot mask and ``where`` (XLA/TPU friendly, no scatter),
and cosines are clamped before ``arccos``.

Two guarantees every margin loss inherits:

* labels are checked against the number of classes (``FaceLoss.class_labels``):
  eager calls raise a one-line ``ValueError``; in a compiled step a bad row's
  loss and gradients are NaN, and label-dependent state is left untouched;
* the exact-mode gradient is bounded: ``|d theta / d cos|`` never exceeds
  :data:`MAX_ANGLE_SLOPE` (see :func:`target_angle`), so ``|dL/dcos|`` stays
  below :meth:`MarginLoss.gradient_bound` for every cosine in [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from keras import ops

from losses.base import EPSILON, FaceLoss, as_float32, poison

GRADIENTS = ("exact", "straight_through")

# |d arccos(c) / dc| = 1 / sin(theta) is unbounded at c = +-1: a margin loss in
# exact mode multiplies it by up to s * m1 (combined: -13,225 at c = -1 + 1e-6).
# Where sin(theta) < 1 / MAX_ANGLE_SLOPE (theta within 0.57 degrees of 0 or pi)
# the backward pass uses the slope at that edge instead; values stay exact.
MAX_ANGLE_SLOPE = 100.0
_SLOPE_EDGE = math.sqrt(1.0 - 1.0 / MAX_ANGLE_SLOPE ** 2)  # the cosine where 1/sin(theta) = MAX


@dataclass
class MarginBatch:
    """What a hook may look at: all cosines, the target mask and cosine, and norms."""

    cos: Any            # (B, C) float32, clipped to [-1, 1]
    target_mask: Any    # (B, C) bool, True at the label
    target_cos: Any     # (B,) float32
    labels: Any         # (B,) int32
    norm: Any = None    # (B, 1) float32 embedding norms, when the head gave them
    valid: Any = None   # (B,) bool: the label is a class id in [0, C); None: all are

    def all_valid(self):
        """A scalar bool: may label-dependent state (CurricularFace t, AdaCos s) learn from this batch?"""
        return ops.all(self.valid) if self.valid is not None else ops.convert_to_tensor(True)

    def assign_if_labels_valid(self, variable, new_value):
        """Assign ``new_value`` unless a label is bad: wrong rows must not leak into running statistics."""
        variable.assign(ops.where(self.all_valid(), new_value, ops.convert_to_tensor(variable)))


def check_gradient(gradient: str) -> str:
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    return gradient


def straight_through(original, modified, gradient: str):
    """``modified`` forward; backward either exact or the identity of ``original``.

    The straight-through variant applies the margin as a constant offset (as
    arcface_torch has done since 2022): gradients are those of plain softmax on
    cosines, which avoids the 1/sin(theta) blow-up that produces NaNs in fp16.
    """
    if gradient == "straight_through":
        return original + ops.stop_gradient(modified - original)
    return modified


def target_angle(cos):
    """theta = arccos(cos), with |d theta / d cos| <= MAX_ANGLE_SLOPE everywhere in [-1, 1].

    Forward: arccos of cos clamped to +-(1 - 1e-7), as always. Backward: the exact
    -1/sin(theta) inside +-_SLOPE_EDGE, continued linearly (slope -MAX_ANGLE_SLOPE)
    beyond it, so the derivative is continuous, bounded, and not 0 at cos = +-1
    (the old clamp stopped it there). Every margin loss that takes an angle goes
    through here, so the bound is the same for all of them.
    """
    exact = ops.arccos(ops.clip(cos, -1.0 + EPSILON, 1.0 - EPSILON))
    inner = ops.clip(cos, -_SLOPE_EDGE, _SLOPE_EDGE)
    surrogate = ops.arccos(inner) - MAX_ANGLE_SLOPE * (cos - inner)
    # Inside the edge exact - surrogate is exactly 0; outside, the value is exact's.
    return surrogate + ops.stop_gradient(exact - surrogate)


def additive_angular_margin(cos, margin, gradient: str = "exact"):
    """ArcFace's cos(theta + m); where theta + m > pi, cos(theta) - m*sin(m) keeps it monotonic.

    ``margin`` may be a scalar or a per-sample tensor (MagFace, ElasticFace).
    """
    margin = as_float32(margin)
    theta = target_angle(cos)
    shifted = ops.cos(theta + margin)
    fallback = cos - margin * ops.sin(margin)
    modified = ops.where(theta + margin <= math.pi, shifted, fallback)
    return straight_through(cos, modified, gradient)


class MarginLoss(FaceLoss):
    """Softmax cross-entropy on ``scale * cos`` with the target cosine replaced by a hook.

    ``y_pred`` is the head's cosines (B, C) or its dict ``{"cos", "norm"}``.
    """

    input_kind = "cosines"
    needs_norm = False

    def __init__(self, scale=64.0, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.scale = float(scale)

    # -- hooks ------------------------------------------------------------------
    def target_logit(self, target_cos, batch: MarginBatch):
        """The target class's modified cosine, (B,), before scaling. Override this."""
        return target_cos

    def non_target_logits(self, batch: MarginBatch, modified_target):
        """Cosines of the other classes, (B, C); CurricularFace re-weights hard negatives."""
        return batch.cos

    def logit_scale(self, batch: MarginBatch):
        """The scale s multiplying every logit; AdaCos adapts it."""
        return self.scale

    def extra_loss(self, batch: MarginBatch):
        """A per-sample term added to the cross-entropy (MagFace's regulariser); default 0."""
        return 0.0

    def target_slope_bound(self) -> float:
        """max |d target_logit / d cos_y| over [-1, 1] (a target built on ``target_angle``: MAX_ANGLE_SLOPE)."""
        return MAX_ANGLE_SLOPE

    def gradient_bound(self, num_classes: int) -> float:
        """|dL_i/dcos_ij| <= s * max(target slope, 1): dL/dz is softmax minus one-hot, in [-1, 1]."""
        return self.scale * max(self.target_slope_bound(), 1.0)

    # -- the shared work ----------------------------------------------------------
    def split_prediction(self, y_pred):
        if isinstance(y_pred, dict):
            if "cos" not in y_pred:
                raise ValueError(f"{self.describe()} got a dict without 'cos' (keys: {sorted(y_pred)})")
            cos, norm = y_pred["cos"], y_pred.get("norm")
        else:
            cos, norm = y_pred, None
        if self.needs_norm and norm is None:
            raise ValueError(
                f"{self.describe()} needs the embedding norms: pass the cosine head's dict "
                "{'cos': (B, C), 'norm': (B, 1)} as y_pred, not bare cosines")
        cos = as_float32(cos)
        if len(cos.shape) != 2:
            raise ValueError(
                f"{self.describe()} expects cosines of shape (batch, classes), got {tuple(cos.shape)}")
        if norm is not None:
            norm = ops.reshape(as_float32(norm), (-1, 1))
        return cos, norm

    def prepare(self, y_true, y_pred) -> MarginBatch:
        cos, norm = self.split_prediction(y_pred)
        # The class count is static in every compiled step we build; the dynamic
        # shape only covers a graph traced with an unknown class dimension.
        classes = cos.shape[1] if cos.shape[1] is not None else ops.shape(cos)[1]
        labels, valid = self.class_labels(y_true, classes)
        self.check_batch(labels, cos, "cosines")
        cos = ops.clip(cos, -1.0, 1.0)
        classes = ops.arange(ops.shape(cos)[1], dtype="int32")
        target_mask = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(classes, 0))
        target_cos = ops.sum(ops.where(target_mask, cos, 0.0), axis=1)
        return MarginBatch(cos=cos, target_mask=target_mask, target_cos=target_cos,
                           labels=labels, norm=norm, valid=valid)

    def logits(self, batch: MarginBatch):
        """(scaled logits (B, C), scaled target logit (B,)): the hooks applied to ``batch``.

        The one place the hooks meet; the plain path (:meth:`call`) and the class-sharded
        head (``head=partial_fc``, on its sampled columns, the target cosine summed across
        shards) both take their logits from here and differ only in the softmax's sum.
        """
        modified = self.target_logit(batch.target_cos, batch)
        others = self.non_target_logits(batch, modified)
        scale = self.logit_scale(batch)
        logits = ops.where(batch.target_mask, ops.expand_dims(modified, 1), others) * scale
        return logits, modified * scale

    def sample_losses(self, batch: MarginBatch, cross_entropy):
        """Per-sample losses from the cross-entropy: plus ``extra_loss``; NaN for bad labels."""
        return poison(cross_entropy + self.extra_loss(batch), batch.valid)

    def call(self, y_true, y_pred):
        batch = self.prepare(y_true, y_pred)
        logits, _ = self.logits(batch)
        # The target column of ``logits`` is the target logit exactly (a where, not arithmetic).
        target = ops.sum(ops.where(batch.target_mask, logits, 0.0), axis=1)
        return self.sample_losses(batch, ops.logsumexp(logits, axis=1) - target)

    def loss_config(self):
        return {"scale": self.scale}
