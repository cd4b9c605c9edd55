"""AdaCos (Zhang et al., CVPR 2019): no margin and no scale to tune.

Fixed: ``s = sqrt(2) * log(C - 1)``. Dynamic: each batch,
``s <- log(B_avg) / cos(min(pi/4, theta_med))`` with ``B_avg`` the batch mean of
``sum_{j != y} exp(s * cos(theta_j))`` at the previous s and ``theta_med`` the
median target angle (numpy's median: the mean of the two middle values for an
even batch). s carries no gradient and lives in ``state_layer``.
"""

import math

import keras
from keras import ops

from losses.base import StateLayer
from losses.margin import MarginLoss, target_angle
from trainer.registry import LOSSES


@LOSSES.register("adacos")
@keras.saving.register_keras_serializable(package="facetrain")
class AdaCosLoss(MarginLoss):
    """``dynamic=False`` keeps the fixed scale; the scale is derived from the class count."""

    def __init__(self, dynamic=True, name="adacos", reduction="sum_over_batch_size", dtype=None):
        super().__init__(scale=0.0, name=name, reduction=reduction, dtype=dtype)
        self.dynamic = bool(dynamic)
        # 0 means "not set yet": the fixed scale needs C, known from the first batch.
        self.state_layer = StateLayer({"scale": 0.0}, name=f"{name}_state")

    def fixed_scale(self, batch):
        classes = ops.cast(ops.shape(batch.cos)[1], "float32")
        return math.sqrt(2.0) * ops.log(ops.maximum(classes - 1.0, 1.0 + 1e-6))

    def logit_scale(self, batch):
        stored = ops.convert_to_tensor(self.state_layer.scale)
        previous = ops.where(stored > 0.0, stored, self.fixed_scale(batch))
        if not self.dynamic:
            self.state_layer.scale.assign(previous)  # depends on C only, not on the labels
            return previous
        cos = ops.stop_gradient(batch.cos)
        others = ops.sum(ops.where(batch.target_mask, 0.0, ops.exp(previous * cos)), axis=1)
        median_angle = ops.median(target_angle(ops.stop_gradient(batch.target_cos)))
        scale = ops.log(ops.mean(others)) / ops.cos(ops.minimum(math.pi / 4, median_angle))
        batch.assign_if_labels_valid(self.state_layer.scale, scale)
        return scale

    def gradient_bound(self, num_classes):
        """s * 1 (no margin; s carries no gradient), with s bounded from the stored scale.

        The dynamic update divides log(B_avg) <= s_prev + log(C - 1) by a cosine
        of at most pi/4, so one call's s is at most sqrt(2) * (s_prev + log(C - 1)).
        """
        stored = float(keras.ops.convert_to_numpy(self.state_layer.scale))
        log_others = math.log(max(num_classes - 1.0, 1.0 + 1e-6))
        previous = stored if stored > 0.0 else math.sqrt(2.0) * log_others
        return math.sqrt(2.0) * (previous + log_others) if self.dynamic else previous

    def loss_config(self):
        return {"dynamic": self.dynamic}
