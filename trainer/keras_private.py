"""Every use of Keras's private API, in one place.

Keras does not export a few things a training framework needs: the base of its
own preprocessing layers (``DataLayer``: it switches a layer to TensorFlow ops
inside ``tf.data`` whatever the backend), a layer's per-backend seed generator,
the per-replica loss scaling that ``compute_loss`` applies, and the TensorFlow
trainer's log reduction. They live under ``keras.src`` and move between
releases, so setup.py bounds Keras at the newest release tested, and
``tests/trainer/test_keras_private.py`` names the symbol that moved when a new
release breaks one of them. Nothing else in the code base imports ``keras.src``
or calls a private Keras method; components and docs use the public wrappers
exported here (``scale_loss_for_distribution`` is re-exported publicly by
``loops.base`` for loops).
"""

from __future__ import annotations

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
)

__all__ = ["DataLayer", "backend_name", "in_stateless_scope", "in_tf_graph", "reduce_weighted_values",
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
