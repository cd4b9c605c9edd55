"""What every registered head declares, so loops read it instead of probing for it.

A head maps the embedding to what its loss reads (``{"cos", "norm"}`` for the cosine
head). Two declared class attributes tell the loop how to drive it:

* ``uses_labels``: the head needs the labels to compute the loss (``head=partial_fc``
  samples classes by label and reduces the softmax across replicas). The supervised
  loop's ``call`` then returns the embedding, and its ``compute_loss`` calls
  :meth:`FaceHead.per_sample_loss`.
* ``owns_update``: the head updates some of its weights itself (Partial FC under
  TensorFlow: each replica stores different rows, which a Keras optimizer, made for
  mirrored variables, cannot update). The loop then trains with the step of
  ``models.heads.own_update``, which calls the three hooks below.

Heads given by a dotted path (any Keras layer) are not ``FaceHead``s: they declare
nothing, so they are plain heads (:func:`uses_labels` is False for them).
"""

from __future__ import annotations

import keras


class FaceHead(keras.layers.Layer):
    """Base of every registered head; the defaults are a plain head (Keras's step trains it)."""

    uses_labels: bool = False
    owns_update: bool = False

    # -- uses_labels ---------------------------------------------------------------------
    def per_sample_loss(self, loss, embeddings, labels, training=False):
        """This program's per-sample losses (B_local,) of ``loss`` on ``embeddings``."""
        raise NotImplementedError(f"{type(self).__name__} declares uses_labels but has no per_sample_loss")

    # -- owns_update (models.heads.own_update calls these) ----------------------------------
    def use_optimizer(self, optimizer) -> None:
        """At compile: the rule the head will apply to its own weights (one line if unsupported)."""
        raise NotImplementedError(f"{type(self).__name__} declares owns_update but has no use_optimizer")

    def recording(self, tape):
        """A context in which ``tape`` watches the weights the head reads this step; it yields
        the recorder handed back to :meth:`apply_own_gradient`."""
        raise NotImplementedError(f"{type(self).__name__} declares owns_update but has no recording")

    def apply_own_gradient(self, recorded, gradient, optimizer) -> None:
        """Update the weights ``recorded`` saw with ``gradient`` (the loss's, for ``recorded.weights``)."""
        raise NotImplementedError(f"{type(self).__name__} declares owns_update but has no apply_own_gradient")

    # -- memory -----------------------------------------------------------------------------
    def memory_per_device(self, optimizer=None) -> dict | None:
        """A sharded head's share of one device as stored (``devices``, ``rows_per_device``,
        ``optimizer_slots``, ``bytes_per_device``); None for a head every device holds whole."""
        return None


def head_memory(head, optimizer=None) -> dict | None:
    """``head``'s stored share of one device, with ``gib_per_device``, or None (not sharded)."""
    found = head.memory_per_device(optimizer) if isinstance(head, FaceHead) else None
    if found is None:
        return None
    return {**found, "gib_per_device": round(found["bytes_per_device"] / 2**30, 3)}


def head_memory_line(found: dict) -> str:
    """The console's line for :func:`head_memory`'s answer (the bench and the training job)."""
    return (f"head memory per device: {found['gib_per_device']} GiB ({found['rows_per_device']:,} rows "
            f"and {found['optimizer_slots']} optimizer slot(s) each, {found['devices']} device(s))")


def uses_labels(head) -> bool:
    """Whether ``head`` (a ``FaceHead``, any other Keras layer, or None) needs the labels."""
    return isinstance(head, FaceHead) and head.uses_labels
