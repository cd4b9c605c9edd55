"""Blocks, necks and preprocessing as nested functional models of built-in Keras layers.

Why: a saved ``.keras`` graph that names only Keras's own classes
(``Functional``, ``Conv2D``, ``BatchNormalization``, ...) loads with plain
``keras.saving.load_model`` in an interpreter that imports nothing of this
framework, so an exported embedding model is portable. A nested model (rather
than its layers spliced flat into the parent) keeps a block one unit: one name
in the parent graph and one ``RematScope`` entry (the whole block is
recomputed in the backward pass, not each small layer).
"""

from __future__ import annotations

from collections.abc import Callable

import keras


def submodel(graph: Callable, input_shape, dtype="float32", name: str = "block") -> keras.Model:
    """``graph(x)`` (built-in layers applied to a symbolic ``x``) as a functional ``keras.Model``.

    Layers are created under ``name_scope(name)``, so variables keep block-scoped
    paths (``stage1_block1/conv1/kernel``) although layer names repeat across blocks.
    """
    with keras.name_scope(name):
        inputs = keras.Input(tuple(input_shape), dtype=keras.backend.standardize_dtype(dtype),
                             name=f"{name}_input")
        outputs = graph(inputs)
    return keras.Model(inputs, outputs, name=name)


def apply_submodel(graph: Callable, x, name: str):
    """Run the symbolic tensor ``x`` through ``submodel(graph)`` built for its shape."""
    return submodel(graph, x.shape[1:], x.dtype, name)(x)


class LazySubmodel:
    """A ``submodel`` built from the shape of the first input it is called on.

    For components constructed before their input is known (a neck's dense
    input width, the GDC kernel size follow the backbone output). It is a
    builder, not a layer: what enters the caller's graph is the plain
    ``keras.Model`` (``.model`` after the first call); later calls reuse it.
    """

    def __init__(self, graph: Callable, name: str):
        self.graph = graph
        self.name = name
        self.model: keras.Model | None = None

    def __call__(self, inputs, training=None):
        if self.model is None:
            self.model = submodel(self.graph, inputs.shape[1:], inputs.dtype, self.name)
        return self.model(inputs, training=training)

    def __repr__(self) -> str:
        return f"LazySubmodel({self.name!r}, built={self.model is not None})"
