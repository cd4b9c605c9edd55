"""MagFace (Meng et al., CVPR 2021): an ArcFace margin that grows with the embedding norm.

``a = clip(||x||, l_a, u_a)``, ``m(a) = l_m + (u_m - l_m) (a - l_a) / (u_a - l_a)``, plus
the regulariser ``lambda_g * g(a)`` with ``g(a) = a / u_a^2 + 1 / a`` that rewards
large norms for confident samples, so the norm becomes a quality score.
"""

import keras
from keras import ops

from losses.margin import MarginLoss, additive_angular_margin, check_gradient
from trainer.registry import LOSSES


@LOSSES.register("magface")
@keras.saving.register_keras_serializable(package="facetrain")
class MagFaceLoss(MarginLoss):
    """Needs the head's dict ``{"cos", "norm"}``."""

    needs_norm = True
    input_kind = "cosines_and_norm"

    def __init__(self, scale=64.0, lower_norm=10.0, upper_norm=110.0, lower_margin=0.45,
                 upper_margin=0.8, regularizer_weight=35.0, gradient="exact", name="magface",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(scale=scale, name=name, reduction=reduction, dtype=dtype)
        if not 0 < lower_norm < upper_norm:
            raise ValueError(f"magface needs 0 < lower_norm < upper_norm, got {lower_norm}, {upper_norm}")
        self.lower_norm, self.upper_norm = float(lower_norm), float(upper_norm)
        self.lower_margin, self.upper_margin = float(lower_margin), float(upper_margin)
        self.regularizer_weight = float(regularizer_weight)
        self.gradient = check_gradient(gradient)

    def clipped_norm(self, batch):
        return ops.clip(ops.squeeze(batch.norm, 1), self.lower_norm, self.upper_norm)

    def target_logit(self, target_cos, batch):
        a = self.clipped_norm(batch)
        margin = self.lower_margin + (self.upper_margin - self.lower_margin) * (
            (a - self.lower_norm) / (self.upper_norm - self.lower_norm))
        return additive_angular_margin(target_cos, margin, self.gradient)

    def extra_loss(self, batch):
        a = self.clipped_norm(batch)
        return self.regularizer_weight * (a / self.upper_norm ** 2 + 1.0 / a)

    def loss_config(self):
        return {**super().loss_config(), "lower_norm": self.lower_norm, "upper_norm": self.upper_norm,
                "lower_margin": self.lower_margin, "upper_margin": self.upper_margin,
                "regularizer_weight": self.regularizer_weight, "gradient": self.gradient}
