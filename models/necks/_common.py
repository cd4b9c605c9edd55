"""What the necks share: the insightface BatchNorm and its fixed-gamma variant.

A neck is a registered factory ``fn(embedding_dim=512, **params)`` returning a
callable that maps the backbone output (B, h, w, C) or tokens (B, T, D) to
(B, embedding_dim). It returns a ``LazySubmodel``: a functional model of
built-in Keras layers, built on the first call from the backbone output's shape,
so an exported model loads without this framework (``models/submodel.py``).
"""

from __future__ import annotations

from models.layers import batch_norm  # insightface eps / momentum

__all__ = ["batch_norm", "fixed_gamma_batch_norm"]


def fixed_gamma_batch_norm(x, name=None, **kwargs):
    """BatchNorm whose gamma exists (fixed at 1) but is not trained, applied to ``x``.

    insightface's ``features`` BN sets ``weight.requires_grad = False``; keeping
    the weight (rather than ``scale=False``) keeps the parameter count and the
    weight layout identical to the reference, so ported checkpoints load 1:1.
    A built-in BN with its gamma variable frozen after build (not a subclass),
    so saved models need no custom class; a model loaded from ``.keras`` has the
    gamma trainable again, which matters only if it is fine-tuned.
    """
    layer = batch_norm(name, **kwargs)
    y = layer(x)
    layer.gamma.trainable = False
    return y
