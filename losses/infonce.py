"""Softmax-over-the-batch contrastive losses: SupCon (Khosla et al., NeurIPS 2020) and
NT-Xent (Chen et al., SimCLR, ICML 2020).

SupCon ``L_out``: for anchor i, A(i) = every other sample, P(i) = those with i's
label; ``L_i = -1/|P(i)| sum_P log(exp(z_i.z_p / tau) / sum_A exp(z_i.z_a / tau))``,
averaged over anchors with a positive. NT-Xent is SupCon whose only positive is
the other view of the same image: 2N stacked views, rows i and i + N paired, so
each anchor has 2N - 2 negatives; labels are not needed and are ignored.
"""

import keras
from keras import ops

from losses.base import spread_mean
from losses.pairwise import PairLoss, VERY_NEGATIVE, cosine_similarity_matrix, pair_masks
from trainer.registry import LOSSES


def supervised_contrastive(unit, positive, temperature):
    """Per-anchor SupCon over unit embeddings and a (B, B) positive mask (diagonal excluded)."""
    logits = cosine_similarity_matrix(unit) / temperature
    others = ops.logical_not(ops.eye(ops.shape(unit)[0], dtype="bool"))
    # Shifting each row by its largest other logit keeps float32 precision (the
    # loss is often a tiny difference of two large numbers); it cancels exactly.
    logits = logits - ops.stop_gradient(ops.max(ops.where(others, logits, VERY_NEGATIVE), axis=1,
                                                keepdims=True))
    log_denominator = ops.logsumexp(ops.where(others, logits, VERY_NEGATIVE), axis=1, keepdims=True)
    log_probability = logits - log_denominator
    positives = ops.cast(positive, "float32")
    count = ops.sum(positives, axis=1)
    mean_log_probability = ops.sum(positives * log_probability, axis=1) / ops.maximum(count, 1.0)
    return spread_mean(-mean_log_probability, count > 0)


@LOSSES.register("supcon")
@keras.saving.register_keras_serializable(package="facetrain")
class SupConLoss(PairLoss):
    """Supervised contrastive loss; ``base_temperature`` (official code: 0.07) rescales by tau/base."""

    def __init__(self, temperature=0.1, base_temperature=None, name="supcon",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = float(temperature)
        self.base_temperature = None if base_temperature is None else float(base_temperature)

    def pair_loss(self, labels, unit):
        losses = supervised_contrastive(unit, pair_masks(labels)[0], self.temperature)
        if self.base_temperature is not None:
            losses = losses * (self.temperature / self.base_temperature)
        return losses

    def loss_config(self):
        return {"temperature": self.temperature, "base_temperature": self.base_temperature}


@LOSSES.register("ntxent")
@keras.saving.register_keras_serializable(package="facetrain")
class NTXentLoss(PairLoss):
    """``y_pred``: 2N views stacked (rows i and i + N are one image); ``y_true`` may be None."""

    input_kind = "views"

    def __init__(self, temperature=0.1, name="ntxent", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = float(temperature)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if y_true is None:  # labels are optional: the pairing is positional
            y_true = ops.zeros((ops.shape(y_pred)[0],), dtype="int32")
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        unit = self.embeddings(y_pred)
        rows = unit.shape[0]
        if rows is not None and rows % 2:
            raise ValueError(f"{self.describe()} needs 2N stacked views (rows i and i + N paired), "
                             f"got an odd batch of {rows}")
        labels = None
        if y_true is not None:
            labels = self.int_labels(y_true)
            self.check_batch(labels, unit, "views")
        return self.pair_loss(labels, unit)

    def pair_loss(self, labels, unit):
        """Positional pairs: rows i and i + N are one image's two views; ``labels`` are not used."""
        half = ops.shape(unit)[0] // 2
        ids = ops.arange(ops.shape(unit)[0], dtype="int32") % half
        return supervised_contrastive(unit, pair_masks(ids)[0], self.temperature)

    def loss_config(self):
        return {"temperature": self.temperature}
