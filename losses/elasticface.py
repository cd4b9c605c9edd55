"""ElasticFace (Boutros et al., CVPRW 2022): margins drawn per sample from N(m, sigma).

Arc: ``s * cos(theta_y + m_i)`` (with ArcFace's monotonic fallback past pi);
Cos: ``s * (cos(theta_y) - m_i)``. The "+" variant (``plus: true``) sorts the
draws so the hardest samples (lowest target cosine) get the largest margins.
The random stream is a ``SeedGenerator`` owned by ``state_layer`` (checkpointed).
"""

import keras
from keras import ops

from losses.base import StateLayer
from losses.margin import MarginLoss, additive_angular_margin, check_gradient
from trainer.registry import LOSSES


class ElasticMarginLoss(MarginLoss):
    """Shared part: draw one margin per sample, optionally matched to sample difficulty."""

    stochastic = True
    deterministic_overrides = {"sigma": 0.0}

    def __init__(self, scale, margin, sigma, plus, seed, name, reduction, dtype):
        super().__init__(scale=scale, name=name, reduction=reduction, dtype=dtype)
        self.margin, self.sigma = float(margin), float(sigma)
        self.plus, self.seed = bool(plus), int(seed)
        self.state_layer = StateLayer(seed=self.seed, name=f"{name}_state")

    def sample_margins(self, target_cos):
        margins = keras.random.normal(ops.shape(target_cos), mean=self.margin, stddev=self.sigma,
                                      seed=self.state_layer.seed_generator)
        if not self.plus:
            return margins
        # Rank 0 is the easiest sample (highest cosine); it gets the smallest margin.
        rank = ops.argsort(ops.argsort(-ops.stop_gradient(target_cos)))
        return ops.take(ops.sort(margins), rank)

    def loss_config(self):
        return {**super().loss_config(), "margin": self.margin, "sigma": self.sigma,
                "plus": self.plus, "seed": self.seed}


@LOSSES.register("elasticface_arc")
@keras.saving.register_keras_serializable(package="facetrain")
class ElasticArcFaceLoss(ElasticMarginLoss):
    """ArcFace with an elastic (random, per-sample) angular margin."""

    def __init__(self, scale=64.0, margin=0.5, sigma=0.05, plus=False, seed=0, gradient="exact",
                 name="elasticface_arc", reduction="sum_over_batch_size", dtype=None):
        super().__init__(scale, margin, sigma, plus, seed, name, reduction, dtype)
        self.gradient = check_gradient(gradient)

    def target_logit(self, target_cos, batch):
        return additive_angular_margin(target_cos, self.sample_margins(target_cos), self.gradient)

    def loss_config(self):
        return {**super().loss_config(), "gradient": self.gradient}


@LOSSES.register("elasticface_cos")
@keras.saving.register_keras_serializable(package="facetrain")
class ElasticCosFaceLoss(ElasticMarginLoss):
    """CosFace with an elastic (random, per-sample) additive cosine margin."""

    def __init__(self, scale=64.0, margin=0.35, sigma=0.05, plus=False, seed=0,
                 name="elasticface_cos", reduction="sum_over_batch_size", dtype=None):
        super().__init__(scale, margin, sigma, plus, seed, name, reduction, dtype)

    def target_logit(self, target_cos, batch):
        return target_cos - self.sample_margins(target_cos)
