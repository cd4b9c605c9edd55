"""Combined margin (InsightFace; Deng et al., CVPR 2019 sec. 3.3): ``s * (cos(m1*theta + m2) - m3)``.

(1, m, 0) is ArcFace, (1, 0, m) CosFace, (m1 > 1, 0, 0) SphereFace (Liu et al.,
CVPR 2017). Past ``m1*theta + m2 = pi`` the cosine would turn back up, so the
target logit needs a continuation there (``continuation``):

* ``insightface`` (default, m1 = 1 only): as insightface's CombinedMarginLoss,
  where ``theta + m2 > pi`` the target is ``cos(theta) - m2*sin(m2) - m3``
  (ArcFace's fallback), so numbers match insightface's code;
* ``sphereface``: the k-th half-turn continues as ``(-1)^k cos(m1*theta + m2) - 2k - m3``,
  continuous and decreasing in theta for any m1 >= 1, m2 >= 0 (SphereFace's psi).

Both agree wherever ``m1*theta + m2 <= pi``.
"""

import math

import keras
from keras import ops

from losses.margin import (MAX_ANGLE_SLOPE, MarginLoss, additive_angular_margin, check_gradient,
                           straight_through, target_angle)
from trainer.registry import LOSSES, ConfigError

CONTINUATIONS = ("insightface", "sphereface")


def sphereface_psi(angle):
    """``(-1)^k cos(angle) - 2k`` with ``k = floor(angle / pi)``: a monotonic cosine past pi."""
    k = ops.floor(angle / math.pi)
    sign = 1.0 - 2.0 * ops.mod(k, 2.0)
    return sign * ops.cos(angle) - 2.0 * k


@LOSSES.register("combined")
@keras.saving.register_keras_serializable(package="facetrain")
class CombinedMarginLoss(MarginLoss):
    """Multiplicative (m1), additive angular (m2) and additive cosine (m3) margins together."""

    def __init__(self, scale=64.0, m1=1.0, m2=0.3, m3=0.2, continuation="insightface",
                 gradient="exact", name="combined", reduction="sum_over_batch_size", dtype=None):
        super().__init__(scale=scale, name=name, reduction=reduction, dtype=dtype)
        if m1 < 1.0 or m2 < 0.0:
            raise ConfigError(f"combined margin needs m1 >= 1 and m2 >= 0, got m1={m1}, m2={m2}")
        if continuation not in CONTINUATIONS:
            raise ConfigError(f"combined margin: continuation must be one of {', '.join(CONTINUATIONS)}, "
                              f"got {continuation!r}")
        if continuation == "insightface" and m1 != 1.0:
            raise ConfigError(
                f"combined margin: insightface's continuation is defined for m1 = 1 only (got m1={m1}); "
                "for a SphereFace margin set loss.continuation=sphereface")
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)
        self.continuation = continuation
        self.gradient = check_gradient(gradient)

    def target_logit(self, target_cos, batch):
        if self.continuation == "insightface":
            # ArcFace's margin and fallback, then the cosine margin (its own
            # straight-through handling covers the angular part; m3 is a constant).
            return additive_angular_margin(target_cos, self.m2, self.gradient) - self.m3
        modified = sphereface_psi(self.m1 * target_angle(target_cos) + self.m2) - self.m3
        return straight_through(target_cos, modified, self.gradient)

    def target_slope_bound(self):
        # |d psi(m1 theta + m2) / d cos| <= m1 * |d theta / d cos|; ArcFace's fallback has slope 1.
        return self.m1 * MAX_ANGLE_SLOPE

    def loss_config(self):
        return {**super().loss_config(), "m1": self.m1, "m2": self.m2, "m3": self.m3,
                "continuation": self.continuation, "gradient": self.gradient}
