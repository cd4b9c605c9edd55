"""Several independently augmented views of each sample, for contrastive loops (SimCLR,
Chen et al., ICML 2020).

``MultiView([p1, p2])(images (B, ...), labels (B,))`` returns the views stacked
along the batch axis: rows ``i`` and ``i + B`` (and ``i + 2B`` ...) are views of
sample ``i``; the labels are repeated in the same layout. This is the layout
the NT-Xent loss expects. ``ViewAxis(multiview)`` gives the views an axis of their own
instead, ``(B, V, H, W, C)``, as the multi-view loops take them.
"""

from __future__ import annotations

from augment.reseeding import Reseedable, unique
from trainer.keras_private import in_tf_graph
from trainer.registry import ConfigError


def _ops():
    """TensorFlow inside tf.data graphs (any Keras backend), keras.ops elsewhere."""
    if in_tf_graph():
        import tensorflow as tf

        return tf
    import keras

    return keras.ops


def _concat(tensors):
    ops = _ops()
    return ops.concat(tensors, axis=0) if ops.__name__ == "tensorflow" else ops.concatenate(tensors, axis=0)


class MultiView(Reseedable):
    """N views, each drawn by its own pipeline (None = the unaugmented image)."""

    def __init__(self, pipelines: list):  # AugmentPipeline or None (the unaugmented image) each
        if len(pipelines) < 2:
            raise ConfigError("augment: a multi-view setup needs at least 2 views")
        if any(p is not None and p.mixes_labels for p in pipelines):
            raise ConfigError("augment: mixup/cutmix cannot be used in multi-view (contrastive) "
                              "pipelines; views of one sample must keep one label")
        self.pipelines = list(pipelines)

    @property
    def num_views(self) -> int:
        return len(self.pipelines)

    mixes_labels = False

    def seed_generators(self, backend: str) -> list:
        return unique([g for p in self.pipelines if p is not None for g in p.seed_generators(backend)])

    def __call__(self, images, labels=None):
        views = [images if p is None else p(images, labels)[0] for p in self.pipelines]
        stacked_labels = None if labels is None else _concat([labels] * self.num_views)
        return _concat(views), stacked_labels

    def view_axis(self, images, labels=None):
        """The views on an axis of their own: ((B, V, H, W, C) images, (B,) labels)."""
        views = [images if p is None else p(images, labels)[0] for p in self.pipelines]
        return _ops().stack(views, axis=1), labels

    def __repr__(self):
        return f"MultiView({self.pipelines!r})"


class ViewAxis(Reseedable):
    """A multi-view augmentation giving views on their own axis: (B, V, H, W, 3), labels (B,)."""

    def __init__(self, multiview: MultiView):
        self.multiview = multiview
        self.seed = multiview.seed

    @property
    def num_views(self) -> int:
        return self.multiview.num_views

    mixes_labels = False

    def seed_generators(self, backend: str) -> list:
        return self.multiview.seed_generators(backend)

    def __call__(self, images, labels):
        return self.multiview.view_axis(images, labels)
