"""ArcFace (Deng et al., CVPR 2019) and Sub-center ArcFace (Deng et al., ECCV 2020).

Target logit ``s * cos(theta_y + m)``; where ``theta_y + m > pi`` the logit falls
back to ``s * (cos(theta_y) - m * sin(m))`` so it keeps decreasing with the angle.
Sub-center ArcFace is the same loss over cosines that the head has max-pooled
over K sub-centres per class; the loss asks the head for them.
"""

import keras

from losses.margin import MarginLoss, additive_angular_margin, check_gradient
from trainer.registry import LOSSES


@LOSSES.register("arcface")
@keras.saving.register_keras_serializable(package="facetrain")
class ArcFaceLoss(MarginLoss):
    """Additive angular margin ``m`` (radians) on the target angle."""

    def __init__(self, scale=64.0, margin=0.5, gradient="exact", name="arcface",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(scale=scale, name=name, reduction=reduction, dtype=dtype)
        self.margin = float(margin)
        self.gradient = check_gradient(gradient)

    def target_logit(self, target_cos, batch):
        return additive_angular_margin(target_cos, self.margin, self.gradient)

    def loss_config(self):
        return {**super().loss_config(), "margin": self.margin, "gradient": self.gradient}


@LOSSES.register("subcenter_arcface")
@keras.saving.register_keras_serializable(package="facetrain")
class SubCenterArcFaceLoss(ArcFaceLoss):
    """ArcFace over cosines max-pooled across ``sub_centers`` per class (pooled by the head)."""

    def __init__(self, scale=64.0, margin=0.5, sub_centers=3, gradient="exact",
                 name="subcenter_arcface", reduction="sum_over_batch_size", dtype=None):
        super().__init__(scale=scale, margin=margin, gradient=gradient, name=name,
                         reduction=reduction, dtype=dtype)
        if int(sub_centers) < 1:
            raise ValueError(f"sub_centers must be >= 1, got {sub_centers}")
        self.sub_centers = int(sub_centers)

    def head_requirements(self):
        return {"sub_centers": self.sub_centers}

    def loss_config(self):
        return {**super().loss_config(), "sub_centers": self.sub_centers}
