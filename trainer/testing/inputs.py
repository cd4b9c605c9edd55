"""Small, seeded batches of the kind each loss declares (``input_kind``), from free embeddings.

Everything is a function of one float32 array ``x`` so gradients and SGD steps
act on "free embeddings": margin losses see ``x`` through a fixed cosine head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras import ops


@dataclass
class Batch:
    kind: str
    x: np.ndarray                 # the free embeddings (float32)
    labels: np.ndarray | None     # int32 (None for NT-Xent views)
    kernel: np.ndarray | None     # (D, C) class weights for margin losses

    @property
    def size(self) -> int:
        return self.x.shape[0]

    def prediction(self, x, dtype="float32"):
        """What the loss receives as ``y_pred`` for embeddings ``x``."""
        if self.kernel is None:
            return ops.cast(x, dtype)
        return {k: ops.cast(v, dtype) for k, v in head_outputs(x, self.kernel).items()}


def head_outputs(x, kernel):
    """The cosine head's maths (float32): ``{"cos": (B, C), "norm": (B, 1)}``."""
    x = ops.cast(x, "float32")
    norm = ops.sqrt(ops.sum(ops.square(x), axis=1, keepdims=True))
    w = ops.convert_to_tensor(kernel)
    w = w / ops.sqrt(ops.sum(ops.square(w), axis=0, keepdims=True))
    return {"cos": ops.matmul(x / norm, w), "norm": norm}


def make_batch(kind: str, batch_size: int = 8, dim: int = 8, classes: int = 5,
               seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    if kind in ("cosines", "cosines_and_norm"):
        labels = rng.integers(0, classes, batch_size).astype("int32")
        kernel = rng.normal(size=(dim, classes)).astype("float32")
        # Norms around 20-40, inside MagFace's [10, 110] band and near AdaFace's running mean.
        x = (rng.normal(size=(batch_size, dim)) * 10.0).astype("float32")
        return Batch(kind, x, labels, kernel)
    if kind == "views":
        half = batch_size // 2
        base = rng.normal(size=(half, dim))
        views = np.concatenate([base + 0.3 * rng.normal(size=base.shape),
                                base + 0.3 * rng.normal(size=base.shape)])
        return Batch(kind, views.astype("float32"), None, None)
    # P identities x K = 2 images, so every anchor has a positive and negatives.
    labels = np.repeat(np.arange(batch_size // 2), 2).astype("int32")
    rng.shuffle(labels)
    x = rng.normal(size=(batch_size, dim)).astype("float32")
    return Batch(kind, x, labels, None)


def permuted(batch: Batch, seed: int = 1) -> Batch:
    """The same samples in another order (views keep rows i and i + N paired)."""
    rng = np.random.default_rng(seed)
    if batch.kind == "views":
        half = batch.size // 2
        order = rng.permutation(half)
        index = np.concatenate([order, order + half])
        return Batch(batch.kind, batch.x[index], None, None)
    index = rng.permutation(batch.size)
    return Batch(batch.kind, batch.x[index], batch.labels[index], batch.kernel)


def relabelled(batch: Batch, seed: int = 2) -> Batch:
    """Class ids renamed by a permutation (the class weights move with them)."""
    if batch.labels is None:
        return batch
    rng = np.random.default_rng(seed)
    classes = batch.kernel.shape[1] if batch.kernel is not None else int(batch.labels.max()) + 1
    mapping = rng.permutation(classes)
    kernel = None
    if batch.kernel is not None:
        kernel = np.empty_like(batch.kernel)
        kernel[:, mapping] = batch.kernel
    else:  # pair losses: ids need not even be contiguous
        mapping = mapping * 7 + 3
    return Batch(batch.kind, batch.x, mapping[batch.labels].astype("int32"), kernel)


HIGH_LABEL = 2049  # first class id float16 cannot hold (bfloat16 stops at 256)


def high_label_batch(kind: str, batch_size: int = 8, dim: int = 8, seed: int = 0) -> Batch:
    """Labels above 2,048, which a float16 or bfloat16 cast would round onto other ids.

    Margin losses get ``HIGH_LABEL + 3 * batch_size`` classes with each embedding
    near its class's weight, so a rounded label moves the target and the loss
    changes a lot. Pair losses get P x 2 identities 2049, 2050, ...: float16
    merges 2051 with 2052, bfloat16 merges them all.
    """
    rng = np.random.default_rng(seed)
    if kind in ("cosines", "cosines_and_norm"):
        classes = HIGH_LABEL + 3 * batch_size
        labels = (HIGH_LABEL + 3 * np.arange(batch_size)).astype("int32")
        kernel = rng.normal(size=(dim, classes)).astype("float32")
        unit = kernel[:, labels].T / np.linalg.norm(kernel[:, labels].T, axis=1, keepdims=True)
        x = (30.0 * unit + 3.0 * rng.normal(size=(batch_size, dim))).astype("float32")
        return Batch(kind, x, labels, kernel)
    labels = (HIGH_LABEL + np.repeat(np.arange(batch_size // 2), 2)).astype("int32")
    x = rng.normal(size=(batch_size, dim)).astype("float32")
    return Batch(kind, x, labels, None)


def angle_sweep(classes: int = 5, seed: int = 0):
    """(cosines (N, C), labels (N,), norms (N, 1)): row i's target cosine is the i-th sweep value.

    The sweep runs from -1 to 1 through the float32 values next to +-1, where
    d arccos / d cos is largest; other cosines are moderate, norms span 1 to 120
    (AdaFace's z and MagFace's margin take their whole ranges).
    """
    rng = np.random.default_rng(seed)
    edges = np.array([0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 5e-2])
    values = np.unique(np.concatenate([-1.0 + edges, 1.0 - edges, np.linspace(-0.9, 0.9, 19)]))
    values = values.astype("float32")
    labels = (np.arange(len(values)) % classes).astype("int32")
    cos = rng.uniform(-0.5, 0.5, size=(len(values), classes)).astype("float32")
    cos[np.arange(len(values)), labels] = values
    norms = np.linspace(1.0, 120.0, len(values)).astype("float32")[:, None]
    return cos, labels, norms
