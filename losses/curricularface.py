"""CurricularFace (Huang et al., CVPR 2020): ArcFace positives, hard negatives re-weighted by t.

A negative is hard when ``cos(theta_j) > cos(theta_y + m)``; its logit becomes
``cos(theta_j) * (t + cos(theta_j))``. ``t`` follows the batch's mean target
cosine, ``t <- 0.01 * mean(cos(theta_y)) + 0.99 * t`` (t0 = 0, no gradient), so
hard negatives matter more as training progresses (the curriculum).
"""

import keras
from keras import ops

from losses.base import StateLayer
from losses.margin import MarginLoss, additive_angular_margin, check_gradient, target_angle
from trainer.registry import LOSSES


@LOSSES.register("curricularface")
@keras.saving.register_keras_serializable(package="facetrain")
class CurricularFaceLoss(MarginLoss):
    """ArcFace with an adaptive curriculum on hard negatives; state ``t`` lives in ``state_layer``."""

    def __init__(self, scale=64.0, margin=0.5, momentum=0.01, gradient="exact",
                 name="curricularface", reduction="sum_over_batch_size", dtype=None):
        super().__init__(scale=scale, name=name, reduction=reduction, dtype=dtype)
        self.margin = float(margin)
        self.momentum = float(momentum)
        self.gradient = check_gradient(gradient)
        self.state_layer = StateLayer({"t": 0.0}, name=f"{name}_state")

    def target_logit(self, target_cos, batch):
        return additive_angular_margin(target_cos, self.margin, self.gradient)

    def non_target_logits(self, batch, modified_target):
        target_cos = ops.stop_gradient(batch.target_cos)
        t = (self.momentum * ops.mean(target_cos)
             + (1.0 - self.momentum) * ops.convert_to_tensor(self.state_layer.t))
        batch.assign_if_labels_valid(self.state_layer.t, t)
        threshold = ops.cos(target_angle(target_cos) + self.margin)
        hard = ops.greater(batch.cos, ops.expand_dims(threshold, 1))
        return ops.where(hard, batch.cos * (t + batch.cos), batch.cos)

    def loss_config(self):
        return {**super().loss_config(), "margin": self.margin, "momentum": self.momentum,
                "gradient": self.gradient}
