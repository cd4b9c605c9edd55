"""Every use of Keras's private API, and the two monkeypatches, in one place, each with its reason.

Keras does not export a few things a training framework needs. They live under
``keras.src`` and move between releases, so setup.py bounds Keras at the newest
release tested, and ``tests/trainer/test_keras_private.py`` names the symbol that
moved when a new release breaks one of them. Nothing else in the code base imports
``keras.src`` or calls a private Keras method; components and docs use the public
wrappers exported here (``scale_loss_for_distribution`` is re-exported publicly by
``loops.base`` for loops).

Why each one is unavoidable (Keras 3 has no public equivalent):

* ``DataLayer``: the base of Keras's own preprocessing layers; it switches a layer to
  TensorFlow ops inside ``tf.data`` whatever the backend, which our augmentation layers
  need to run in the input pipeline under JAX.
* ``seed_generator`` (``DataLayer._get_seed_generator``), ``using_backend``
  (``backend.set_backend``), ``backend_name``: a data layer keeps one seed generator per
  backend, created on demand; exact resume (``augment.reseeding``) must reach the
  TensorFlow one before ``tf.data`` traces, and set its state per batch.
* ``sublayers`` (``Layer._flatten_layers``), ``own_seed_generators``
  (``Layer._seed_generators``): the generators of Keras layers nested in an op
  (``RandAugment``, a plain layer's noise) are listed nowhere public in a fixed order.
* ``reduce_weighted_values``, ``scale_loss_for_distribution``,
  ``unscale_loss_for_distribution``: what ``Loss.__call__`` and ``compute_loss`` do to a
  per-sample loss (reduction, ``1 / replicas`` scaling); losses that keep labels integer
  and loops that reduce their own per-sample values must do exactly the same.
* ``unsynced_model`` (``Callback._model``), ``learning_rate_schedule``
  (``Optimizer._learning_rate``): a step boundary must not write the JAX training state
  back into the variables or read the optimizer's step (``trainer.callbacks.base``).
* ``track_loss`` (``Model._loss_tracker``): a train step written by hand (a head that
  updates its own rows) records the ``loss`` log as Keras's own step does.
* ``in_tf_graph``, ``in_stateless_scope``: whether code runs inside ``tf.data`` /
  ``tf.function``, or while Keras traces symbolically (a sharded head must draw its rows
  eagerly).
* ``symbolic_build`` (``Model._symbolic_build``): create every variable from the batches'
  structure before step 1, so a checkpoint can be restored into them (fit builds later).
* Monkeypatch ``skip_fit_build`` (``Model._maybe_symbolic_build``): after that build, fit
  must not build again under a strategy (its multi-worker build fails,
  keras-team/keras#20585).
* Monkeypatch of ``reduce_per_replica`` (``tensorflow_trainer``, applied in
  ``trainer.runtime``, multi-worker only): Keras reduces scalar logs with ``axis=0``,
  which fails for scalars across workers.
"""

from __future__ import annotations

import keras
from keras.src.layers.preprocessing.data_layer import DataLayer
from keras.src.losses.loss import (reduce_weighted_values, scale_loss_for_distribution,
                                   unscale_loss_for_distribution)

# (module, attribute) of every private symbol used: the test imports each one.
PRIVATE_SYMBOLS = (
    ("keras.src.layers.preprocessing.data_layer", "DataLayer"),
    ("keras.src.losses.loss", "reduce_weighted_values"),
    ("keras.src.losses.loss", "scale_loss_for_distribution"),
    ("keras.src.losses.loss", "unscale_loss_for_distribution"),
    ("keras.src.utils.backend_utils", "in_tf_graph"),
    ("keras.src.backend.common.stateless_scope", "in_stateless_scope"),
    ("keras.src.tree", "map_structure"),
    ("keras.src.backend.tensorflow.trainer", "reduce_per_replica"),
)
# Private methods and attributes of public classes, checked on a live layer by the test.
PRIVATE_MEMBERS = (
    ("DataLayer", "_get_seed_generator"),
    ("DataLayer", "backend._backend"),
    ("DataLayer", "backend.set_backend"),
    ("Layer", "_flatten_layers"),
    ("Layer", "_seed_generators"),
    ("Model", "_symbolic_build"),
    ("Model", "_maybe_symbolic_build"),
    ("Model", "_loss_tracker"),
    ("Optimizer", "_learning_rate"),
    ("Callback", "_model"),
)

__all__ = ["DataLayer", "backend_name", "in_stateless_scope", "in_tf_graph", "learning_rate_schedule",
           "reduce_weighted_values", "unsynced_model",
           "scale_loss_for_distribution", "seed_generator", "skip_fit_build", "sublayers", "symbolic_build", "tensorflow_trainer", "track_loss",
           "unscale_loss_for_distribution", "using_backend", "own_seed_generators"]


def in_tf_graph() -> bool:
    """True while tracing a ``tf.function`` / ``tf.data`` map (any Keras backend)."""
    from keras.src.utils import backend_utils

    return backend_utils.in_tf_graph()


def in_stateless_scope() -> bool:
    """True while Keras traces symbolically (variables created now are initialised later)."""
    from keras.src.backend.common import stateless_scope

    return stateless_scope.in_stateless_scope()


def backend_name(layer: DataLayer) -> str:
    """The backend a ``DataLayer`` computes with right now ("tensorflow" inside tf.data)."""
    return layer.backend._backend


def seed_generator(layer: DataLayer, backend: str | None = None):
    """The layer's ``SeedGenerator`` for ``backend`` (default: the one it computes with now)."""
    return layer._get_seed_generator(backend or backend_name(layer))


class using_backend:
    """Context: a ``DataLayer`` computes with ``backend`` inside the block."""

    def __init__(self, layer: DataLayer, backend: str):
        self.layer, self.backend, self.previous = layer, backend, None

    def __enter__(self):
        self.previous = backend_name(self.layer)
        self.layer.backend.set_backend(self.backend)
        return self.layer

    def __exit__(self, *exc):
        self.layer.backend.set_backend(self.previous)
        return False


def sublayers(layer) -> list:
    """``layer`` and every layer nested in it, each once."""
    return list(layer._flatten_layers(include_self=True, recursive=True))


def own_seed_generators(layer) -> list:
    """Seed generators a plain Keras layer (not a ``DataLayer``) tracks itself."""
    return list(getattr(layer, "_seed_generators", []) or [])


def symbolic_build(model, data_batch) -> None:
    """Create the model's and optimizer's variables from a batch's structure, as ``fit`` does."""
    model._symbolic_build(data_batch=data_batch)


def skip_fit_build(model) -> None:
    """Stop ``fit`` from building the model again (it was built by ``symbolic_build``)."""
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def track_loss(model, loss, batch_size) -> None:
    """What Keras's own ``train_step`` records for the ``loss`` log, for a step written by hand."""
    model._loss_tracker.update_state(unscale_loss_for_distribution(loss), sample_weight=batch_size)


def tensorflow_trainer():
    """Keras's TensorFlow trainer module and ``keras.src.tree`` (for the multi-worker log patch)."""
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    return trainer, tree


def unsynced_model(callback):
    """A callback's model as is (``Callback._model``). The public ``Callback.model`` under JAX first
    writes the whole training state back into the model's variables (so that a checkpoint sees it):
    at every step that is the framework's largest cost on a GPU, and from a worker thread a race
    with the training loop. Host attributes (``stop_training``, ``steps_per_execution``) and the
    pending state (``_jax_state``) need no write-back."""
    return callback._model


def learning_rate_schedule(optimizer):
    """The optimizer's ``LearningRateSchedule`` (``Optimizer._learning_rate``), or None for a fixed
    rate. The public ``learning_rate`` evaluates the schedule at the optimizer's step: reading that
    variable mid-``fit`` makes the host wait for the device, and under JAX writes the whole training
    state back, so the step curves evaluate the schedule at the step they count themselves."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's
    rate = getattr(inner, "_learning_rate", None)
    return rate if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule) else None


def raw_value(variable):
    """A JAX variable's stored array, as is (no autocast, no stateless scope)."""
    return variable._value


def replace_value(variable, value, keep_layout: bool = True) -> None:
    """Put ``value`` in a variable without re-sharding it (Keras's ``assign`` would distribute it
    by the variable's layout); ``keep_layout=False`` also forgets that layout (a local copy)."""
    if not keep_layout:
        variable._layout = None
    variable._value = value
