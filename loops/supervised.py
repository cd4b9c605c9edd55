"""Supervised classification step: backbone → neck → embedding → head → loss.

Labels are integer ids (B,), or, after MixUp / CutMix, the dict of
``augment.mixing`` (two targets and a weight per sample).

A head that needs the labels (it declares ``uses_labels``, e.g. Partial FC) is not
called in the forward pass: ``call`` returns the embedding, and ``compute_loss``
asks the head for the per-sample loss with ``head.per_sample_loss(loss,
embeddings, labels, training)`` (the head gathers, samples and reduces across
replicas itself). Other heads take the fast path, unchanged.

It overrides ``compute_loss``, so Keras's own ``train_step`` (per backend) does
the gradient work: the loop runs unchanged under TensorFlow and JAX, distribution
strategies, mixed precision and XLA. A head that updates its own weights
(``owns_update``) brings its own step, which ``FaceLoop`` runs (``models.heads.own_update``).
"""

from __future__ import annotations

import keras

from augment.mixing import is_mixed, mix_loss
from loops.base import FaceLoop, output_dim
from models.heads.base import uses_labels
from trainer.keras_private import reduce_weighted_values  # what Loss.__call__ reduces with
from trainer.registry import LOOPS, ConfigError


@LOOPS.register("supervised")
@keras.saving.register_keras_serializable(package="facetrain")
class SupervisedLoop(FaceLoop):
    """Images and integer labels in; the face loss on the head's cosines out."""

    keras_parts = ("embedding_model", "head", "loss")

    def __init__(self, embedding_model, head, loss, **kwargs):
        super().__init__(embedding_model, head, loss, **kwargs)
        self.head_uses_labels = uses_labels(head)

    def compile(self, optimizer="rmsprop", **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        if self.head_uses_labels and not self.head.built:
            # Now, eagerly and in the strategy's scope: a sharded head draws each replica's rows.
            self.head.build((None, output_dim(self.embedding_model)))

    def call(self, images, training=False):
        embeddings = self.embedding_model(images, training=training)
        if self.head_uses_labels:
            if not self.head.built:  # its variables must exist before a checkpoint is restored
                self.head.build(tuple(embeddings.shape))
            return embeddings  # compute_loss applies the head, with the labels
        return self.head(embeddings, training=training)

    def batch_needs(self, augment):
        # Before any data is read: a head that samples classes by label takes one label per image.
        if self.head_uses_labels and augment is not None and augment.mixes_labels:
            raise ConfigError(f"head '{self.head.name}' needs one label per image; MixUp/CutMix "
                              "give two: use an augmentation without mixing")
        return super().batch_needs(augment)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.head_uses_labels:
            values = self.head.per_sample_loss(self.face_loss, y_pred, y, training=training)
            loss = reduce_weighted_values(values, sample_weight=sample_weight,
                                          reduction=self.face_loss.reduction, dtype="float32")
        elif is_mixed(y):  # MixUp / CutMix: w·L(y_a) + (1 − w)·L(y_b) per sample (augment.mixing)
            loss = reduce_weighted_values(
                mix_loss(self.face_loss.call, y, y_pred, self.loss_state),
                sample_weight=sample_weight, reduction=self.face_loss.reduction, dtype="float32")
        else:
            loss = self.face_loss(y, y_pred, sample_weight=sample_weight)
        return loss + self.regularization_loss()
