"""Contrastive loss (Hadsell, Chopra & LeCun, CVPR 2006), with a positive and a negative margin.

On unit embeddings with Euclidean distance d: positives pay ``[d - pos_margin]_+``,
negatives ``[neg_margin - d]_+``. Each part is averaged over the pairs that pay
something (pytorch-metric-learning's convention), and the two are added.
"""

import keras
from keras import ops

from losses.pairwise import PairLoss, euclidean_distance_matrix, pair_masks, spread_total
from trainer.registry import LOSSES


@LOSSES.register("contrastive")
@keras.saving.register_keras_serializable(package="facetrain")
class ContrastiveLoss(PairLoss):
    """Every ordered pair in the batch; labels decide positive or negative."""

    def __init__(self, pos_margin=0.0, neg_margin=1.0, name="contrastive",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.pos_margin, self.neg_margin = float(pos_margin), float(neg_margin)

    def pair_loss(self, labels, unit):
        distance = euclidean_distance_matrix(unit)
        positive, negative = pair_masks(labels)
        total = 0.0
        for mask, pair_losses in ((positive, ops.relu(distance - self.pos_margin)),
                                  (negative, ops.relu(self.neg_margin - distance))):
            pair_losses = ops.where(mask, pair_losses, 0.0)
            paying = ops.sum(ops.cast(pair_losses > 0.0, "float32"))
            total = total + spread_total(ops.sum(pair_losses, axis=1), paying)
        return total

    def loss_config(self):
        return {"pos_margin": self.pos_margin, "neg_margin": self.neg_margin}
