"""Triplet loss (Schroff et al., FaceNet, CVPR 2015) with three miners.

``[d(a, p) - d(a, n) + margin]_+`` on unit embeddings (Euclidean distance, or
squared as in FaceNet with ``squared: true``; ``soft_margin: true`` uses
``softplus(d_ap - d_an)`` instead, Hermans et al. 2017). Mining:

* ``batch_hard`` (Hermans et al., 2017): per anchor its farthest positive and
  closest negative; mean over anchors that have both.
* ``batch_all``: every valid triplet; mean over the triplets with a non-zero
  loss ("BA != 0" in Hermans et al.).
* ``semi_hard``: the triplets with ``0 < d_an - d_ap <= margin`` (the
  pytorch-metric-learning definition, (c) in our loss reference; not FaceNet's
  per-pair "closest negative beyond d_ap"); mean over those with a non-zero loss.

``batch_all`` and ``semi_hard`` build a (B, B, B) tensor: fine for face batches
up to a few hundred.
"""

import keras
from keras import ops

from losses.pairwise import (PairLoss, euclidean_distance_matrix, masked_max, masked_min,
                             pair_masks, spread_total)
from trainer.registry import LOSSES

MINERS = ("batch_hard", "batch_all", "semi_hard")


@LOSSES.register("triplet")
@keras.saving.register_keras_serializable(package="facetrain")
class TripletLoss(PairLoss):
    """Margin triplet loss; ``mining`` picks which triplets of the batch count."""

    def __init__(self, margin=0.2, mining="batch_hard", squared=False, soft_margin=False,
                 name="triplet", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if mining not in MINERS:
            raise ValueError(f"triplet mining must be one of {MINERS}, got {mining!r}")
        self.margin, self.mining = float(margin), mining
        self.squared, self.soft_margin = bool(squared), bool(soft_margin)

    def hinge(self, gap):
        """Loss of a triplet from ``d_ap - d_an``."""
        return ops.softplus(gap) if self.soft_margin else ops.relu(gap + self.margin)

    def pair_loss(self, labels, unit):
        distance = euclidean_distance_matrix(unit, squared=self.squared)
        positive, negative = pair_masks(labels)
        if self.mining == "batch_hard":
            valid = ops.logical_and(ops.any(positive, axis=1), ops.any(negative, axis=1))
            losses = self.hinge(masked_max(distance, positive) - masked_min(distance, negative))
            losses = ops.where(valid, losses, 0.0)
            return spread_total(losses, ops.sum(ops.cast(valid, "float32")))
        # (anchor, positive, negative) cube: d_ap on axis 1, d_an on axis 2.
        d_ap = ops.expand_dims(distance, 2)
        d_an = ops.expand_dims(distance, 1)
        valid = ops.logical_and(ops.expand_dims(positive, 2), ops.expand_dims(negative, 1))
        if self.mining == "semi_hard":
            slack = d_an - d_ap
            valid = ops.logical_and(valid, ops.logical_and(slack > 0.0, slack <= self.margin))
        losses = ops.where(valid, self.hinge(d_ap - d_an), 0.0)
        paying = ops.sum(ops.cast(losses > 0.0, "float32"))
        return spread_total(ops.sum(losses, axis=(1, 2)), paying)

    def loss_config(self):
        return {"margin": self.margin, "mining": self.mining, "squared": self.squared,
                "soft_margin": self.soft_margin}
