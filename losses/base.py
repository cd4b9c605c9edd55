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
  compare two runs;
* ``state_layer``: None, or the ``StateLayer`` holding the loss's state; the loop
  tracks it (``loops.base.FaceLoop.loss_state``) so it is checkpointed.
"""

from __future__ import annotations

import numpy as np

import keras
from keras import ops

from trainer.keras_private import reduce_weighted_values

EPSILON = 1e-7

# The largest integer up to which every integer is exact in each float dtype: a
# class id above it, stored as that float, may already be another class's id.
EXACT_INTEGERS = {"float16": 2**11, "bfloat16": 2**8, "float32": 2**24, "float64": 2**53}


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
    # The layer holding the loss's state (None: stateless); a stateful loss sets it in __init__.
    state_layer: StateLayer | None = None

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

    def gradient_bound(self, num_classes: int) -> float | None:
        """An upper bound on |d loss.call(...)_i / d y_pred| for any valid input, or None.

        The harness sweeps the target cosine over [-1, 1] and holds a loss to the
        bound it states here; None means "no stated bound" (only finiteness is checked).
        """
        return None

    # -- the calling convention ------------------------------------------------------
    def __call__(self, y_true, y_pred, sample_weight=None):
        """Keras's ``Loss.__call__``, except that labels keep their integer dtype.

        Keras converts ``y_true`` to the loss dtype; in bfloat16 that turns class
        257 into 256 (float16: above 2,048), silently training the wrong class. The
        loss dtype applies to the predictions only.
        """
        with keras.name_scope(self.name):
            y_pred = keras.tree.map_structure(lambda x: ops.convert_to_tensor(x, dtype=self.dtype), y_pred)
            y_true = keras.tree.map_structure(ops.convert_to_tensor, y_true)
            # No Keras masks here: a face loss has one value per sample, never per time step.
            return reduce_weighted_values(self.call(y_true, y_pred), sample_weight=sample_weight,
                                          reduction=self.reduction, dtype=self.dtype)

    # -- helpers ----------------------------------------------------------------
    def describe(self) -> str:
        return f"loss '{self.name}'"

    def label_vector(self, y_true):
        """``y_true`` as a (B,) tensor in its own dtype; a clear error for a missing or one-hot one."""
        if y_true is None:
            raise ValueError(f"{self.describe()} needs integer labels y_true of shape (batch,)")
        labels = ops.convert_to_tensor(y_true)
        if len(labels.shape) == 2 and labels.shape[-1] == 1:
            labels = ops.squeeze(labels, axis=-1)
        if len(labels.shape) != 1:
            raise ValueError(
                f"{self.describe()} expects integer labels of shape (batch,), got shape "
                f"{tuple(labels.shape)}; pass sparse class ids, not one-hot vectors")
        return labels

    def int_labels(self, y_true, batch_size_tensor=None):
        """Identity ids as int32, shape (B,), for losses that only compare labels with each other.

        ``__call__`` keeps integer labels integer; float labels (a direct ``call``
        with floats) are rounded. Losses whose labels index classes use
        :meth:`class_labels`, which checks them instead.
        """
        labels = self.label_vector(y_true)
        return ops.cast(ops.round(ops.cast(labels, "float32")), "int32") \
            if "float" in str(labels.dtype) else ops.cast(labels, "int32")

    def class_labels(self, y_true, num_classes):
        """(int32 labels (B,), valid (B,) bool) for labels that index ``num_classes`` classes.

        ``num_classes`` is an int (static class count) or a scalar tensor.

        Three layers, so a bad label is caught whatever the execution mode:

        * static (free, also while tracing for XLA): float labels in a dtype that
          cannot hold every id below ``num_classes`` exactly raise ``ValueError``;
        * host (eager, or labels that are constants of a traced function): any
          label outside [0, num_classes) or not a whole number raises ``ValueError``
          naming the label and the class count;
        * in the graph (compiled, labels known only at run time): ``valid`` is
          False for such rows, and :func:`poison` makes their loss and gradient NaN,
          which the NaN guard reports (one compare per label: free under XLA).
        """
        labels = self.label_vector(y_true)
        dtype = keras.backend.standardize_dtype(labels.dtype)
        is_float = "float" in dtype
        static_classes = num_classes if isinstance(num_classes, int) else None
        if is_float and static_classes is not None and static_classes - 1 > EXACT_INTEGERS.get(dtype, 0):
            raise ValueError(
                f"{self.describe()}: labels arrived as {dtype}, which cannot hold class ids above "
                f"{EXACT_INTEGERS.get(dtype, 0)} exactly, but there are {num_classes} classes; "
                "pass integer labels")
        known = known_values(labels)
        if known is not None:
            check_label_values(known, static_classes, self.describe())
        # The range test runs in the labels' own dtype: a cast to int32 first would
        # wrap an int64 id of 2**32 + 1 into class 1.
        valid = ops.greater_equal(labels, ops.cast(0, labels.dtype))
        if num_classes is not None:
            valid = ops.logical_and(valid, ops.less(labels, ops.cast(num_classes, labels.dtype)))
        if is_float:
            valid = ops.logical_and(valid, ops.equal(labels, ops.floor(labels)))
        return ops.cast(labels, "int32"), valid

    def check_batch(self, labels, values, what: str) -> None:
        """A clear error when labels and predictions disagree on the batch size."""
        a, b = labels.shape[0], values.shape[0]
        if a is not None and b is not None and a != b:
            raise ValueError(
                f"{self.describe()}: labels have batch size {a} but {what} have batch size {b} "
                f"(shape {tuple(values.shape)}); they must describe the same samples")


def state_of(loss) -> StateLayer | None:
    """The state layer of ``loss``; None when it is stateless or not a ``FaceLoss`` (a Keras loss
    given by dotted path declares no state)."""
    return loss.state_layer if isinstance(loss, FaceLoss) else None


def known_values(x):
    """``x`` as a NumPy array when its values are known while this code runs, else None.

    Known: eager tensors, NumPy arrays and constants folded into a traced graph.
    Unknown: the inputs of a compiled step (TF graph/XLA placeholders, JAX tracers).
    """
    if isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.is_tensor(x):
            return tf.get_static_value(x)
    elif backend == "jax":
        import jax

        if isinstance(x, jax.core.Tracer):
            return None
    try:
        return np.asarray(ops.convert_to_numpy(x))
    except Exception:  # a symbolic value of some other backend: not known now
        return None


def check_label_values(labels: np.ndarray, num_classes: int | None, what: str) -> None:
    """Raise a one-line ``ValueError`` naming the first label that is no class id."""
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind == "f":
        fractional = np.flatnonzero(labels != np.floor(labels))
        if len(fractional):
            raise ValueError(f"{what}: label {float(labels[fractional[0]])!r} (sample {fractional[0]}) "
                             "is not a whole number; labels are integer class ids")
    high = num_classes if num_classes is not None else np.inf
    bad = np.flatnonzero((labels < 0) | (labels >= high))
    if len(bad):
        value = labels[bad[0]]
        value = int(value) if np.isfinite(value) else value
        allowed = (f" for {num_classes} classes; labels must be integers in [0, {num_classes - 1}]"
                   if num_classes is not None else "; labels must be non-negative integers")
        raise ValueError(f"{what}: label {value} (sample {bad[0]}, {len(bad)} bad in the batch) "
                         f"is out of range{allowed}")


def poison(values, valid):
    """``values`` where ``valid``, NaN elsewhere, in the value AND the gradient.

    A wrong label must not train: a NaN loss stops the run (NaN guard, stop mode),
    NaN gradients make the skip-mode guard (and mixed precision's loss scaling)
    drop the step. ``values * where(valid, 1, nan)``: d/dvalues is NaN on bad rows.
    """
    return values * ops.where(valid, 1.0, float("nan"))


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
