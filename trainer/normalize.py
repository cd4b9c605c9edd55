"""L2 normalisation, written once: NumPy for evaluation, ``keras.ops`` for components.

Both divide by the row's Euclidean norm with a floor, so an all-zero row stays
zero instead of becoming NaN. The floors differ on purpose:

* ``l2_normalize`` (inside a model, differentiated) floors the *squared* norm at
  ``epsilon``, as ``tf.math.l2_normalize`` does: the square root is never taken
  of zero, so its gradient stays finite.
* ``l2_normalize_numpy`` (evaluation, never differentiated) floors the norm at
  1e-12, which changes nothing but all-zero rows.

This module imports nothing of the framework (and Keras only when the Keras
version is called), so components and evaluation can both use it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["l2_normalize", "l2_normalize_numpy"]


def l2_normalize(x, axis: int = -1, epsilon: float = 1e-12):
    """``x / sqrt(max(sum(x**2, axis), epsilon))`` with ``keras.ops`` (any backend, XLA-safe).

    Computes in ``x``'s dtype: cast to float32 first under mixed precision.
    """
    from keras import ops

    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), epsilon))


def l2_normalize_numpy(x, axis: int = -1) -> np.ndarray:
    """``x`` divided by its norm along ``axis`` (floored at 1e-12), in ``x``'s floating dtype."""
    x = np.asarray(x)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)
