"""Composition of augmentation ops from the ``augment`` config node.

    augment:
      ops:
        - {name: flip, p: 0.5}
        - {name: low_resolution, p: 0.2, scale: [0.2, 1.0]}
        - {name: keras.layers.RandomRotation, factor: 0.03}   # any Keras layer by dotted path
      seed: null          # an int makes two runs draw identical augmentations
      num_views: 1        # > 1: a MultiView of independently drawn copies (contrastive loops)

Each op is applied to a whole batch (B, H, W, 3) of float32 pixels in 0..255,
and each sample takes the op's result with probability ``p`` (its own draw),
so a batch mixes augmented and untouched samples. The pipeline runs inside
``tf.data`` after batching (graph mode) with any Keras backend, and eagerly.
Every op is reseedable from a batch position (``augment.reseeding``); one that
is not is refused when it is built.
"""

from __future__ import annotations

from typing import Any

import keras

from augment._base import AugmentLayer
from augment.mixing import MixingLayer
from augment.multiview import MultiView
from augment.reseeding import Reseedable, check_reseedable, layer_generators, unique
from trainer.keras_private import DataLayer
from trainer.registry import AUGMENTS, ConfigError, accepted_parameters, to_plain
from trainer.seeding import mix_seed

PIPELINE_KEYS = ("ops", "seed", "num_views", "views")


@keras.saving.register_keras_serializable(package="facetrain")
class RandomApply(AugmentLayer):
    """Apply ``layer`` to each sample with probability ``p`` (one draw per sample)."""

    def __init__(self, layer: keras.layers.Layer, p: float = 1.0, seed: int | None = None,
                 **kwargs):
        super().__init__(seed=seed, **kwargs)
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        self.layer = layer
        self.p = float(p)

    def augment(self, images, seed):
        if self.p <= 0.0:
            return images
        augmented = self.backend.cast(self.layer(images), "float32")
        if self.p >= 1.0:
            return augmented
        chosen = self.uniform(self.batch_size(images), 0.0, 1.0, seed) < self.p
        return self.backend.numpy.where(
            self.backend.numpy.reshape(chosen, (-1, 1, 1, 1)), augmented, images)

    def get_config(self):
        return {**super().get_config(), "p": self.p,
                "layer": keras.saving.serialize_keras_object(self.layer)}


@keras.saving.register_keras_serializable(package="facetrain")
class KerasOp(DataLayer, Reseedable):
    """A Keras layer (a registered short name or a dotted path) as a pipeline op: it calls the
    layer as the pipeline would, and declares the generators the layer draws from."""

    def __init__(self, layer: keras.layers.Layer, **kwargs):
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        # The layer's own dtype policy: inputs are converted exactly as the layer alone would.
        kwargs.setdefault("dtype", layer.dtype_policy)
        kwargs.setdefault("name", f"{layer.name}_op")
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, images):  # no ``training``: the layer resolves it as when called alone
        return self.layer(images)

    def seed_generators(self, backend: str) -> list:
        return layer_generators(self.layer, backend)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "layer": keras.saving.serialize_keras_object(self.layer)}


def as_op(layer: keras.layers.Layer, name: str) -> Reseedable:
    """``layer`` as a reseedable op (a Keras layer wrapped in ``KerasOp``); one line if it cannot be."""
    op = layer if isinstance(layer, Reseedable) else KerasOp(layer)
    check_reseedable(op, name)
    return op


class AugmentPipeline(Reseedable):
    """An ordered list of ops; ``pipeline(images, labels) -> (images, labels)``.

    ``labels`` pass through unchanged unless a mixing op (mixup/cutmix) is in the
    list; then they become the dict described in ``augment.mixing`` (at most one
    mixing op per pipeline, so that every sample has exactly two targets).
    """

    num_views = 1  # one image per sample (MultiView makes several)

    def __init__(self, steps: list[keras.layers.Layer], seed: int | None = None):
        mixing = [s for s in steps if isinstance(s, MixingLayer)]
        if len(mixing) > 1:
            raise ConfigError("augment: at most one of mixup/cutmix per pipeline "
                              f"(got {len(mixing)}); pick one")
        self.steps = [as_op(step, step.name) for step in steps]
        self.seed = seed

    def seed_generators(self, backend: str) -> list:
        return unique([g for step in self.steps for g in step.seed_generators(backend)])

    @property
    def mixes_labels(self) -> bool:
        return any(isinstance(s, MixingLayer) for s in self.steps)

    def __call__(self, images, labels=None):
        if len(images.shape) != 4:
            raise ValueError(f"augment pipelines take batches (B, H, W, C); got shape "
                             f"{tuple(images.shape)}: apply them after .batch()")
        for step in self.steps:
            if isinstance(step, MixingLayer) and labels is not None:
                mixed = step({"images": images, "labels": labels})
                images = mixed.pop("images")
                labels = mixed
            else:
                images = step(images)
        return images, labels

    def __repr__(self):
        names = ", ".join(getattr(s, "layer", s).__class__.__name__ for s in self.steps)
        return f"AugmentPipeline([{names}], seed={self.seed})"


def derive_seed(seed: int | None, *indices: int) -> int | None:
    """A distinct, reproducible seed per op / view; None stays None (fresh randomness)."""
    if seed is None:
        return None
    return mix_seed(int(seed), *(7919 * (index + 1) for index in indices))


def build_op(node: Any, seed: int | None) -> keras.layers.Layer:
    """One op node ``{name, p, **params}`` -> a layer (gated by ``RandomApply`` unless p == 1)."""
    node = {"name": node} if isinstance(node, str) else dict(to_plain(node))
    p = float(node.pop("p", 1.0))
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"augment op '{node.get('name')}': p must be in [0, 1], got {p}")
    target = AUGMENTS.check(node)
    accepted, _, is_open = accepted_parameters(target)
    runtime = {}
    if "seed" not in node and ("seed" in accepted or is_open):
        runtime["seed"] = seed
    is_mixing = isinstance(target, type) and issubclass(target, MixingLayer)
    if is_mixing:
        node.setdefault("p", p)  # mixing ops gate themselves: labels follow the choice
    layer = AUGMENTS.build(node, **runtime)
    if not isinstance(layer, keras.layers.Layer):
        raise ConfigError(f"augment op '{node['name']}' built {type(layer).__name__}, "
                          "not a keras Layer")
    if not (is_mixing or p >= 1.0):
        layer = RandomApply(layer, p=p, seed=derive_seed(seed, 10_000))
    return as_op(layer, node["name"])


def build_pipeline(ops, seed: int | None = None) -> AugmentPipeline:
    steps = [build_op(op, derive_seed(seed, index)) for index, op in enumerate(ops or [])]
    return AugmentPipeline(steps, seed=seed)


def build_augmentation(node: Any):
    """The ``augment`` config node -> ``AugmentPipeline``, ``MultiView`` or None (no ops).

    Keys: ``ops`` (list of op nodes), ``seed``, ``num_views`` (copies of ``ops``
    drawn independently), or ``views`` (a list of ``{ops: [...]}``, one per view).
    """

    node = to_plain(node) or {}
    if isinstance(node, list):
        node = {"ops": node}
    unknown = sorted(set(node) - set(PIPELINE_KEYS))
    if unknown:
        raise ConfigError(f"augment has no key '{unknown[0]}': valid keys are "
                          f"{', '.join(PIPELINE_KEYS)}")
    seed = node.get("seed")
    views = node.get("views")
    num_views = int(node.get("num_views") or 1)
    if views:
        pipelines = [build_pipeline((view or {}).get("ops"), derive_seed(seed, 100 + i))
                     for i, view in enumerate(views)]
        return MultiView(pipelines)
    if num_views > 1:
        return MultiView([build_pipeline(node.get("ops"), derive_seed(seed, 100 + i))
                          for i in range(num_views)])
    if not node.get("ops"):
        return None
    return build_pipeline(node["ops"], seed)
