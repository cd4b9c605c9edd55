"""Combined margin (InsightFace; Deng et al., CVPR 2019 sec. 3.3): ``s * (cos(m1*theta + m2) - m3)``.

(1, m, 0) is ArcFace, (1, 0, m) CosFace, (m1 > 1, 0, 0) SphereFace (Liu et al.,
CVPR 2017). Past ``m1*theta + m2 = pi`` the cosine would turn back up, so, as in
SphereFace, the k-th half-turn continues as ``(-1)^k cos(m1*theta + m2) - 2k``:
continuous and decreasing in theta for any m1 >= 1, m2 >= 0. (ArcFace's own
fallback differs only for theta > pi - m2.)
"""

import math

import keras
from keras import ops

from losses.margin import MarginLoss, check_gradient, straight_through, target_angle
from trainer.registry import LOSSES


def sphereface_psi(angle):
    """``(-1)^k cos(angle) - 2k`` with ``k = floor(angle / pi)``: a monotonic cosine past pi."""
    k = ops.floor(angle / math.pi)
    sign = 1.0 - 2.0 * ops.mod(k, 2.0)
    return sign * ops.cos(angle) - 2.0 * k


@LOSSES.register("combined")
@keras.saving.register_keras_serializable(package="facetrain")
class CombinedMarginLoss(MarginLoss):
    """Multiplicative (m1), additive angular (m2) and additive cosine (m3) margins together."""

    def __init__(self, scale=64.0, m1=1.0, m2=0.3, m3=0.2, gradient="exact", name="combined",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(scale=scale, name=name, reduction=reduction, dtype=dtype)
        if m1 < 1.0 or m2 < 0.0:
            raise ValueError(f"combined margin needs m1 >= 1 and m2 >= 0, got m1={m1}, m2={m2}")
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)
        self.gradient = check_gradient(gradient)

    def target_logit(self, target_cos, batch):
        modified = sphereface_psi(self.m1 * target_angle(target_cos) + self.m2) - self.m3
        return straight_through(target_cos, modified, self.gradient)

    def loss_config(self):
        return {**super().loss_config(), "m1": self.m1, "m2": self.m2, "m3": self.m3,
                "gradient": self.gradient}
