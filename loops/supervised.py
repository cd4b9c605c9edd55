"""Supervised classification step: backbone → neck → embedding → head → loss.

It overrides ``compute_loss`` only, so Keras's own ``train_step`` (per backend)
does the gradient work: the loop runs unchanged under TensorFlow and JAX,
distribution strategies, mixed precision and XLA.
"""

from __future__ import annotations

import keras

from loops.base import FaceLoop
from trainer.registry import LOOPS


@LOOPS.register("supervised")
@keras.saving.register_keras_serializable(package="facetrain")
class SupervisedLoop(FaceLoop):
    """Images and integer labels in; the face loss on the head's cosines out."""

    keras_parts = ("embedding_model", "head", "loss")

    def __init__(self, embedding_model, head, loss, **kwargs):
        super().__init__(embedding_model, **kwargs)
        self.head = head
        self.face_loss = loss
        # Stateful losses (AdaFace, CurricularFace, AdaCos) keep their state in a
        # layer; tracking it here puts it in checkpoints and in JAX's state.
        self.loss_state = getattr(loss, "state_layer", None)

    def part(self, argument):
        return self.face_loss if argument == "loss" else super().part(argument)

    def call(self, images, training=False):
        return self.head(self.embedding_model(images, training=training), training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = self.face_loss(y, y_pred, sample_weight=sample_weight)
        return loss + self.regularization_loss()
