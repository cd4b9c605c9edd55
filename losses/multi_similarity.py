"""Multi-similarity loss (Wang et al., CVPR 2019), with its own pair mining.

Cosine similarities S. Mining keeps negatives with ``S_an > min_p S_ap - epsilon``
and positives with ``S_ap < max_n S_an + epsilon``; then per anchor
``(1/alpha) log(1 + sum_P exp(-alpha (S - base))) + (1/beta) log(1 + sum_N exp(beta (S - base)))``,
averaged over all anchors. ``mining: false`` uses every pair.
"""

import keras
from keras import ops

from losses.pairwise import (PairLoss, cosine_similarity_matrix, masked_logsumexp, masked_max,
                             masked_min, pair_masks)
from trainer.registry import LOSSES


@LOSSES.register("multi_similarity")
@keras.saving.register_keras_serializable(package="facetrain")
class MultiSimilarityLoss(PairLoss):
    """alpha 2, beta 50 (pytorch-metric-learning; the paper's code uses 40), base 0.5, epsilon 0.1."""

    def __init__(self, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1, mining=True,
                 name="multi_similarity", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha, self.beta, self.base = float(alpha), float(beta), float(base)
        self.epsilon, self.mining = float(epsilon), bool(mining)

    def pair_loss(self, labels, unit):
        similarity = cosine_similarity_matrix(unit)
        positive, negative = pair_masks(labels)
        if self.mining:
            hardest_negative = ops.expand_dims(masked_max(similarity, negative), 1)
            hardest_positive = ops.expand_dims(masked_min(similarity, positive), 1)
            positive = ops.logical_and(positive, similarity - self.epsilon < hardest_negative)
            negative = ops.logical_and(negative, similarity + self.epsilon > hardest_positive)
            # Mining needs both kinds: an anchor without one keeps nothing.
            both = ops.logical_and(ops.any(pair_masks(labels)[0], 1, keepdims=True),
                                   ops.any(pair_masks(labels)[1], 1, keepdims=True))
            positive, negative = ops.logical_and(positive, both), ops.logical_and(negative, both)
        pull = masked_logsumexp(-self.alpha * (similarity - self.base), positive, add_one=True)
        push = masked_logsumexp(self.beta * (similarity - self.base), negative, add_one=True)
        return pull / self.alpha + push / self.beta

    def loss_config(self):
        return {"alpha": self.alpha, "beta": self.beta, "base": self.base,
                "epsilon": self.epsilon, "mining": self.mining}
