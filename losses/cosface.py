"""CosFace / LMCL (Wang et al., CVPR 2018): additive cosine margin, ``s * (cos(theta_y) - m)``."""

import keras

from losses.margin import MarginLoss
from trainer.registry import LOSSES


@LOSSES.register("cosface")
@keras.saving.register_keras_serializable(package="facetrain")
class CosFaceLoss(MarginLoss):
    """Subtracts ``margin`` from the target cosine (0.35 in the paper, 0.4 on large data)."""

    def __init__(self, scale=64.0, margin=0.35, name="cosface", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(scale=scale, name=name, reduction=reduction, dtype=dtype)
        self.margin = float(margin)

    def target_logit(self, target_cos, batch):
        return target_cos - self.margin

    def loss_config(self):
        return {**super().loss_config(), "margin": self.margin}
