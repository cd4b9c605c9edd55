"""Label-mixing augmentations: MixUp (Zhang et al., ICLR 2018) and CutMix (Yun et al., ICCV 2019).

Margin losses (ArcFace, CosFace, ...) need one integer target per sample to put
the margin on, so we do not produce soft one-hot labels. A mixed batch instead
carries, per sample, both integer targets and the weight of the first:

    labels = {"labels": y_a (B,) int32, "mix_labels": y_b (B,) int32, "mix_weight": lam (B,)}

and the loss is ``lam * L(y_a) + (1 - lam) * L(y_b)`` per sample, which
``mix_loss`` computes for any loss that returns per-sample values (all of ours
do). Samples the op's ``p`` left alone have ``mix_labels == labels`` and weight 1.
"""

from __future__ import annotations

import abc

import keras

from augment._base import AugmentLayer
from trainer.keras_private import seed_generator
from trainer.registry import AUGMENTS

MIX_KEYS = ("labels", "mix_labels", "mix_weight")


class MixingLayer(AugmentLayer):
    """Mixes each sample with a random partner of the batch; ``p`` is the share mixed.

    Called on ``{"images", "labels"}`` it returns the images and the label
    dict above; called on images alone it returns only the mixed images.
    """

    def __init__(self, alpha: float = 1.0, p: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.alpha = float(alpha)
        self.p = float(p)

    @abc.abstractmethod
    def blend(self, images, partner_images, seed):
        """(mixed images, weight of the original image) per sample."""

    def mix(self, images, seed):
        """(images, partner index, chosen, weight): each sample mixed with its partner where chosen."""
        np_ = self.backend.numpy
        batch = self.batch_size(images)
        partner = self.backend.random.shuffle(np_.arange(batch, dtype="int32"), seed=seed)
        mixed, weight = self.blend(images, np_.take(images, partner, axis=0), seed)
        chosen = self.uniform(batch, 0.0, 1.0, seed) < self.p
        return np_.where(np_.reshape(chosen, (-1, 1, 1, 1)), mixed, images), partner, chosen, weight

    def augment(self, images, seed):
        """The mixed images alone (what ``call`` returns for images without labels)."""
        return self.mix(images, seed)[0]

    def call(self, data, training=True):
        np_ = self.backend.numpy
        with_labels = isinstance(data, dict)
        images = self.backend.cast(data["images"] if with_labels else data, "float32")
        images, partner, chosen, weight = self.mix(images, seed_generator(self))
        if not with_labels:
            return images
        labels = self.backend.cast(data["labels"], "int32")
        weight = np_.where(chosen, weight, np_.ones_like(weight))
        partner_labels = np_.where(chosen, np_.take(labels, partner, axis=0), labels)
        return {"images": images, "labels": labels, "mix_labels": partner_labels,
                "mix_weight": weight}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "p": self.p}


@AUGMENTS.register("mixup")
@keras.saving.register_keras_serializable(package="facetrain")
class MixUp(MixingLayer):
    """x = lam * x_i + (1 - lam) * x_j with lam ~ Beta(alpha, alpha) per sample."""

    def blend(self, images, partner_images, seed):
        batch = self.batch_size(images)
        weight = self.backend.random.beta((batch,), self.alpha, self.alpha, seed=seed)
        w = self.backend.numpy.reshape(weight, (-1, 1, 1, 1))
        return w * images + (1.0 - w) * partner_images, weight


@AUGMENTS.register("cutmix")
@keras.saving.register_keras_serializable(package="facetrain")
class CutMix(MixingLayer):
    """Paste a box of the partner (area 1 - lam, lam ~ Beta(alpha, alpha)); the weight is the
    area share actually kept after clipping the box to the image."""

    def blend(self, images, partner_images, seed):
        np_ = self.backend.numpy
        batch, height, width = self.batch_size(images), int(images.shape[1]), int(images.shape[2])
        lam = self.backend.random.beta((batch,), self.alpha, self.alpha, seed=seed)
        side = np_.sqrt(1.0 - lam)
        centre_y, centre_x = self.uniform(batch, 0.0, 1.0, seed), self.uniform(batch, 0.0, 1.0, seed)
        top, bottom = np_.clip(centre_y - side / 2, 0, 1), np_.clip(centre_y + side / 2, 0, 1)
        left, right = np_.clip(centre_x - side / 2, 0, 1), np_.clip(centre_x + side / 2, 0, 1)
        rows = np_.reshape((np_.arange(height, dtype="float32") + 0.5) / height, (1, -1, 1))
        cols = np_.reshape((np_.arange(width, dtype="float32") + 0.5) / width, (1, 1, -1))
        r = lambda v: np_.reshape(v, (-1, 1, 1))  # noqa: E731
        box = (rows >= r(top)) & (rows < r(bottom)) & (cols >= r(left)) & (cols < r(right))
        box = self.backend.cast(np_.expand_dims(box, -1), "float32")
        kept = 1.0 - np_.mean(box, axis=(1, 2, 3))
        return images * (1.0 - box) + partner_images * box, kept


def is_mixed(labels) -> bool:
    return isinstance(labels, dict) and "mix_weight" in labels


def mix_loss(loss_fn, labels, y_pred, state_layer=None):
    """Per-sample loss for plain integer labels or a mixed-label dict (see module doc).

    ``loss_fn(y_true, y_pred)`` must return per-sample values (B,), e.g. a
    Keras loss's ``call``. A stateful loss (AdaFace's norm statistics,
    CurricularFace's t, AdaCos's scale, a loss's RNG) updates its state on every
    call; calling it twice would update it twice per step, the second time from
    the partner's labels. So both calls start from the state as it was before the
    step, and the step keeps the update of the first call (the sample's own
    labels): one update per step, as for an unmixed batch. ``state_layer``: the loss's
    state (``losses.base.state_of(loss)``; the loop's ``loss_state``), None when stateless.
    """
    if not is_mixed(labels):
        return loss_fn(labels, y_pred)
    state = list(state_layer.variables) if state_layer is not None else []
    before = _snapshot(state)
    weight = keras.ops.cast(labels["mix_weight"], "float32")
    first = keras.ops.cast(loss_fn(labels["labels"], y_pred), "float32")
    after_first = _snapshot(state)
    _restore(state, before)
    second = keras.ops.cast(loss_fn(labels["mix_labels"], y_pred), "float32")
    _restore(state, after_first)
    return weight * first + (1.0 - weight) * second


def _snapshot(variables):
    return [keras.ops.copy(keras.ops.convert_to_tensor(v)) for v in variables]


def _restore(variables, values):
    for variable, value in zip(variables, values):
        variable.assign(value)
