"""NormFace (Wang et al., ACM MM 2017): softmax cross-entropy on scaled cosines, no margin."""

import keras

from losses.margin import MarginLoss
from trainer.registry import LOSSES


@LOSSES.register("normface")
@keras.saving.register_keras_serializable(package="facetrain")
class NormFaceLoss(MarginLoss):
    """``s * cos(theta_j)`` for every class; the baseline every margin loss modifies."""

    def __init__(self, scale=64.0, name="normface", reduction="sum_over_batch_size", dtype=None):
        super().__init__(scale=scale, name=name, reduction=reduction, dtype=dtype)
