"""Circle loss (Sun et al., CVPR 2020), pair-wise form on cosine similarities.

Per anchor ``softplus(LSE_n(gamma a_n (s_n - m)) + LSE_p(-gamma a_p (s_p - (1 - m))))``
with ``a_p = [1 + m - s_p]_+`` and ``a_n = [s_n + m]_+`` held constant (no
gradient); averaged over anchors that have both a positive and a negative.
Face recognition used m 0.25, gamma 256; the defaults are the paper's 0.4, 80.
"""

import keras
from keras import ops

from losses.base import spread_mean
from losses.pairwise import PairLoss, cosine_similarity_matrix, masked_logsumexp, pair_masks
from trainer.registry import LOSSES


@LOSSES.register("circle")
@keras.saving.register_keras_serializable(package="facetrain")
class CircleLoss(PairLoss):
    """Re-weights each similarity by how far it is from its optimum."""

    def __init__(self, margin=0.4, gamma=80.0, name="circle", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin, self.gamma = float(margin), float(gamma)

    def pair_loss(self, labels, unit):
        s = cosine_similarity_matrix(unit)
        positive, negative = pair_masks(labels)
        weight_p = ops.stop_gradient(ops.relu(1.0 + self.margin - s))
        weight_n = ops.stop_gradient(ops.relu(s + self.margin))
        pull = masked_logsumexp(-self.gamma * weight_p * (s - (1.0 - self.margin)), positive)
        push = masked_logsumexp(self.gamma * weight_n * (s - self.margin), negative)
        valid = ops.logical_and(ops.any(positive, axis=1), ops.any(negative, axis=1))
        return spread_mean(ops.softplus(pull + push), valid)

    def loss_config(self):
        return {"margin": self.margin, "gamma": self.gamma}
