"""What every facetrain loss shares: the calling convention, config plumbing and state.

A loss is a ``keras.losses.Loss`` called as ``loss(y_true, y_pred)`` with integer
labels; ``call`` returns one value per sample so Keras's reduction (and its
per-replica scaling under ``tf.distribute``) stays in charge of the mean.

Class attributes tell the harness (``trainer.testing``) what the loss expects:

* ``input_kind``: ``"cosines"`` (margin losses; a (B, C) tensor or the head's
  dict), ``"cosines_and_norm"`` (the head's dict is required), ``"embeddings"``
  (B, D) or ``"views"`` (2N stacked views, rows i and i + N paired);
* ``scale_invariant``: the loss L2-normalises embeddings, so ``c * x`` gives
  the same value;
* ``stochastic`` and ``deterministic_overrides``: a loss that draws random
  numbers names the config values that make it deterministic for checks that
  compare two runs.
"""

from __future__ import annotations

import keras
from keras import ops

EPSILON = 1e-7


class StateLayer(keras.layers.Layer):
    """Owns a loss's non-trainable state (EMA statistics, adaptive scale, RNG seed).

    Losses are not layers, so the training loop attaches this layer to the model;
    the state then lands in ``model.non_trainable_variables`` (JAX stateless
    training) and in checkpoints. Variables are created eagerly in ``__init__``
    so a loss can be built outside any ``tf.function``.
    """

    def __init__(self, initial_values=None, seed=None, name=None, **kwargs):
        super().__init__(name=name, dtype="float32", **kwargs)
        self.initial_values = dict(initial_values or {})
        self.seed = seed
        for key, value in self.initial_values.items():
            variable = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(value), dtype="float32",
                trainable=False, name=key, autocast=False, aggregation="mean")
            setattr(self, key, variable)
        self.seed_generator = keras.random.SeedGenerator(seed) if seed is not None else None
        self.built = True  # all state exists now; there is nothing for build() to create

    def call(self, inputs=None):  # the layer holds state only
        return inputs

    def reset(self) -> None:
        for key, value in self.initial_values.items():
            getattr(self, key).assign(value)

    def get_config(self):
        return {**super().get_config(), "initial_values": self.initial_values, "seed": self.seed}


class FaceLoss(keras.losses.Loss):
    """Base of every registered loss: label handling, shape checks, config round-trip."""

    input_kind = "cosines"
    scale_invariant = False
    stochastic = False
    deterministic_overrides: dict = {}

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        # Losses compute in float32 whatever the global mixed-precision policy says.
        super().__init__(name=name, reduction=reduction, dtype=dtype or "float32")
        self.state_layer = None

    # -- what subclasses report ------------------------------------------------
    def head_requirements(self) -> dict:
        """Head settings this loss needs (merged into the head's config by the loop)."""
        return {}

    def loss_config(self) -> dict:
        """The constructor parameters of the subclass (override; base fields added here)."""
        return {}

    def get_config(self):
        config = {"name": self.name, "reduction": self.reduction}
        config.update(self.loss_config())
        return config

    # -- helpers ----------------------------------------------------------------
    def describe(self) -> str:
        return f"loss '{self.name}'"

    def int_labels(self, y_true, batch_size_tensor=None):
        """Labels arrive as floats (Keras casts y_true to the loss dtype): back to int32, shape (B,)."""
        if y_true is None:
            raise ValueError(f"{self.describe()} needs integer labels y_true of shape (batch,)")
        labels = ops.convert_to_tensor(y_true)
        if len(labels.shape) == 2 and labels.shape[-1] == 1:
            labels = ops.squeeze(labels, axis=-1)
        if len(labels.shape) != 1:
            raise ValueError(
                f"{self.describe()} expects integer labels of shape (batch,), got shape "
                f"{tuple(labels.shape)}; pass sparse class ids, not one-hot vectors")
        return ops.cast(ops.round(ops.cast(labels, "float32")), "int32") \
            if "float" in str(labels.dtype) else ops.cast(labels, "int32")

    def check_batch(self, labels, values, what: str) -> None:
        """A clear error when labels and predictions disagree on the batch size."""
        a, b = labels.shape[0], values.shape[0]
        if a is not None and b is not None and a != b:
            raise ValueError(
                f"{self.describe()}: labels have batch size {a} but {what} have batch size {b} "
                f"(shape {tuple(values.shape)}); they must describe the same samples")


def spread_mean(values, valid):
    """Per-sample values whose plain batch mean equals the mean of ``values`` over ``valid``.

    Pair losses average over the anchors (or pairs) that have something to learn
    from; Keras averages per-sample values over the whole batch. Scaling by
    B / count keeps both right, and a batch with nothing valid gives exact zeros.
    """
    valid = ops.cast(valid, "float32")
    batch = ops.cast(ops.shape(values)[0], "float32")
    count = ops.maximum(ops.sum(valid), 1.0)
    return values * valid * (batch / count)


def as_float32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")
