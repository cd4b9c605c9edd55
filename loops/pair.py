"""Metric learning on class-balanced batches: triplet, contrastive, multi-similarity, circle,
SupCon, or any loss on embeddings (FaceNet, Schroff et al., CVPR 2015).

Batches are P identities × K images (``trainer.data.samplers``); the loss mines
its pairs in the *global* batch (every replica's rows gathered), so 2 replicas
mine exactly what one device mines. There is no classifier head.
"""

from __future__ import annotations

import keras

from loops.base import BatchNeeds, FaceLoop
from losses.base import FaceLoss
from trainer.collectives import gather_global
from trainer.registry import LOOPS, ConfigError


@LOOPS.register("pair")
@keras.saving.register_keras_serializable(package="facetrain")
class PairLoop(FaceLoop):
    """Embeddings (B, D) of a P×K batch → a pair loss over the global batch."""

    keras_parts = ("embedding_model", "loss")

    def __init__(self, embedding_model, loss, images_per_identity=4, **kwargs):
        super().__init__(embedding_model, loss=loss, **kwargs)
        if loss is None:
            raise ConfigError("loop=pair needs a loss on embeddings: loss=triplet | contrastive | "
                              "multi_similarity | circle | supcon")
        # A Keras loss given by dotted path declares no input kind: it is taken to read embeddings.
        if isinstance(loss, FaceLoss) and loss.input_kind != "embeddings":
            raise ConfigError(f"loop=pair takes a loss on embeddings, but loss '{loss.name}' "
                              f"expects {loss.input_kind}; use loss=triplet | contrastive | "
                              "multi_similarity | circle | supcon")
        self.images_per_identity = int(images_per_identity)

    def loop_config(self):
        return {"images_per_identity": self.images_per_identity}

    def call(self, images, training=False):
        return self.embedding_model(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        labels, embeddings = gather_global(keras.ops.cast(y, "int32"), y_pred)
        return self.face_loss(labels, embeddings) + self.regularization_loss()

    def batch_needs(self, augment) -> BatchNeeds:
        if augment is not None and augment.num_views > 1:
            raise ConfigError("loop=pair takes one view per image; for multi-view batches use "
                              "loop=supcon or loop=simclr, or set augment.num_views=1")
        return BatchNeeds(sampling="identities", images_per_identity=self.images_per_identity)
