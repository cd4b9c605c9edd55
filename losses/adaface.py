"""AdaFace (Kim et al., CVPR 2022): a margin that adapts to image quality, read off the norm.

``n = clip(||x||, 0.001, 100)`` (no gradient) is standardised by running batch
statistics (EMA with ``momentum``, init mean 20, std 100; the batch std is the
unbiased one), ``z = clip(h (n - mu) / (sigma + eps), -1, 1)``, and the target
logit becomes ``s * (cos(clip(theta_y - m z, eps, pi - eps)) - (m + m z))``:
high-quality samples get an angular (ArcFace-like) margin, low-quality ones an
additive (CosFace-like) one. The reference code feeds BGR images; that is the
preprocessing's business, not the loss's.
"""

import math

import keras
from keras import ops

from losses.base import StateLayer
from losses.margin import MarginLoss, check_gradient, straight_through, target_angle
from trainer.registry import LOSSES


@LOSSES.register("adaface")
@keras.saving.register_keras_serializable(package="facetrain")
class AdaFaceLoss(MarginLoss):
    """Needs the head's dict ``{"cos", "norm"}``; batch norm statistics live in ``state_layer``."""

    needs_norm = True
    input_kind = "cosines_and_norm"

    def __init__(self, scale=64.0, margin=0.4, h=0.333, momentum=0.01, epsilon=1e-3,
                 gradient="exact", name="adaface", reduction="sum_over_batch_size", dtype=None):
        super().__init__(scale=scale, name=name, reduction=reduction, dtype=dtype)
        self.margin, self.h = float(margin), float(h)
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.gradient = check_gradient(gradient)
        self.state_layer = StateLayer({"norm_mean": 20.0, "norm_std": 100.0}, name=f"{name}_state")

    def quality(self, batch):
        """z in [-1, 1]: how far each sample's norm sits above the running mean, in running stds."""
        norms = ops.stop_gradient(ops.clip(ops.squeeze(batch.norm, 1), 0.001, 100.0))
        count = ops.cast(ops.shape(norms)[0], "float32")
        batch_mean = ops.mean(norms)
        batch_std = ops.sqrt(ops.sum(ops.square(norms - batch_mean)) / ops.maximum(count - 1.0, 1.0))
        state = self.state_layer
        mean = self.momentum * batch_mean + (1 - self.momentum) * ops.convert_to_tensor(state.norm_mean)
        std = self.momentum * batch_std + (1 - self.momentum) * ops.convert_to_tensor(state.norm_std)
        state.norm_mean.assign(mean)
        state.norm_std.assign(std)
        return ops.clip(self.h * (norms - mean) / (std + self.epsilon), -1.0, 1.0)

    def target_logit(self, target_cos, batch):
        z = self.quality(batch)
        angle = ops.clip(target_angle(target_cos) - self.margin * z, self.epsilon,
                         math.pi - self.epsilon)
        modified = ops.cos(angle) - (self.margin + self.margin * z)
        return straight_through(target_cos, modified, self.gradient)

    def loss_config(self):
        return {**super().loss_config(), "margin": self.margin, "h": self.h,
                "momentum": self.momentum, "epsilon": self.epsilon, "gradient": self.gradient}
