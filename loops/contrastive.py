"""Multi-view contrastive steps: SimCLR (Chen et al., ICML 2020) and SupCon (Khosla et al.,
NeurIPS 2020).

Each image is augmented V times; the embedding model and a projector head map
every view to ``z``; the loss compares each view with every view of the
*global* batch. Under ``tf.distribute`` each replica gathers all replicas'
projections, so an anchor sees 2N - 2 negatives for a global batch of N images
(SimCLR's point: negatives from the whole batch, not the per-replica shard).

Batches carry views on their own axis, ``(B, V, H, W, 3)``, so a strategy that
splits the batch keeps all views of an image on one replica. Inside the step
the views are laid out view-major, rows ``i + v·N``, the layout NT-Xent expects.
"""

from __future__ import annotations

import keras
from keras import ops

from loops.base import BatchNeeds, FaceLoop
from losses.base import FaceLoss
from trainer.collectives import gather_global
from trainer.registry import LOOPS, ConfigError


class MultiViewLoop(FaceLoop):
    """Base: (B, V, H, W, 3) views → projections (B, V, P) → a loss over the global views."""

    keras_parts = ("embedding_model", "head", "loss")
    loss_kinds: tuple = ()           # the loss input kinds this loop accepts
    required_views: int | None = None

    def __init__(self, embedding_model, head, loss, **kwargs):
        super().__init__(embedding_model, head, loss, **kwargs)
        if not isinstance(loss, FaceLoss) or loss.input_kind not in self.loss_kinds:
            raise ConfigError(f"loop '{self.registered_name()}' needs a loss taking "
                              f"{' or '.join(self.loss_kinds)}: {self.loss_hint}")

    loss_hint = ""

    @classmethod
    def registered_name(cls) -> str:
        return cls.__name__.replace("Loop", "").lower()

    def call(self, views, training=False):
        batch, num_views = ops.shape(views)[0], views.shape[1]
        view_major = ops.reshape(ops.transpose(views, (1, 0, 2, 3, 4)), (-1, *views.shape[2:]))
        z = self.embedding_model(view_major, training=training)
        if self.head is not None:
            z = self.head(z, training=training)
        z = ops.cast(z, "float32")
        # Back to sample-major (B, V, P) so that gathering replicas keeps views together.
        return ops.transpose(ops.reshape(z, (num_views, batch, z.shape[-1])), (1, 0, 2))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        labels, z = gather_global(ops.cast(y, "int32"), y_pred)
        num_views = z.shape[1]
        view_major = ops.reshape(ops.transpose(z, (1, 0, 2)), (-1, z.shape[-1]))
        labels = ops.tile(labels, (num_views,))
        return self.face_loss(labels, view_major) + self.regularization_loss()

    def batch_needs(self, augment) -> BatchNeeds:
        views = augment.num_views if augment is not None else 1
        if views < 2:
            raise ConfigError(f"loop={self.registered_name()} needs several augmented views per "
                              "image: augment=simclr (or augment.num_views=2 with ops)")
        if self.required_views is not None and views != self.required_views:
            raise ConfigError(f"loop={self.registered_name()} pairs exactly {self.required_views} "
                              f"views, got augment.num_views={views}; use loop=supcon for more")
        return BatchNeeds(views=views)


@LOOPS.register("simclr")
@keras.saving.register_keras_serializable(package="facetrain")
class SimCLRLoop(MultiViewLoop):
    """Self-supervised: the positive is the other view of the same image (labels unused)."""

    loss_kinds = ("views",)
    required_views = 2
    loss_hint = "loss=ntxent"

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        z = gather_global(y_pred)
        view_major = ops.reshape(ops.transpose(z, (1, 0, 2)), (-1, z.shape[-1]))
        # NT-Xent pairs rows i and i + N itself; labels are never read.
        return self.face_loss(None, view_major) + self.regularization_loss()


@LOOPS.register("supcon")
@keras.saving.register_keras_serializable(package="facetrain")
class SupConLoop(MultiViewLoop):
    """Supervised: every view of every image of the same identity is a positive."""

    loss_kinds = ("embeddings",)
    loss_hint = "loss=supcon (or any loss on embeddings)"
