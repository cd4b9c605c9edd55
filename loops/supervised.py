"""Supervised classification step: backbone → neck → embedding → head → loss.

Labels are integer ids (B,), or, after MixUp / CutMix, the dict of
``augment.mixing`` (two targets and a weight per sample).

A head that needs the labels (``uses_labels = True``, e.g. Partial FC) is not
called in the forward pass: ``call`` returns the embedding, and ``compute_loss``
asks the head for the per-sample loss with ``head.per_sample_loss(loss,
embeddings, labels, training)`` (the head gathers, samples and reduces across
replicas itself). Other heads take the fast path, unchanged.

It overrides ``compute_loss``, so Keras's own ``train_step`` (per backend) does
the gradient work: the loop runs unchanged under TensorFlow and JAX, distribution
strategies, mixed precision and XLA. The one exception is a head that updates its
own rows (``owns_update``: Partial FC under TensorFlow, whose centres are split
across the replicas): its step is Keras's, plus the gradient of the rows the head
sampled, handed to the head before the Keras optimizer updates the rest.
"""

from __future__ import annotations

import keras

from augment.mixing import is_mixed, mix_loss
from loops.base import FaceLoop, output_dim
from trainer.keras_private import reduce_weighted_values  # what Loss.__call__ reduces with
from trainer.keras_private import track_loss
from trainer.registry import LOOPS, ConfigError


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
        # Heads are any Keras layer (a dotted path too): only those that declare it see labels.
        self.head_uses_labels = bool(getattr(head, "uses_labels", False))

    @property
    def head_owns_update(self) -> bool:
        return self.head_uses_labels and bool(getattr(self.head, "owns_update", False))

    def compile(self, optimizer="rmsprop", **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        if self.head_uses_labels and not self.head.built:
            # Now, eagerly and in the strategy's scope: a sharded head draws each replica's rows.
            self.head.build((None, output_dim(self.embedding_model)))
        if self.head_owns_update:  # it keeps its own optimizer slots: it must know the rule now
            self.head.use_optimizer(self.optimizer)

    def train_step(self, *args):  # (data) under TensorFlow, (state, data) under JAX
        if not self.head_owns_update:
            return super().train_step(*args)
        import tensorflow as tf

        [data] = args
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            with self.head.recording(tape) as sampled:
                loss = self.compute_loss(x, y, y_pred, sample_weight, training=True)
            track_loss(self, loss, tf.shape(x)[0])
            loss = self.optimizer.scale_loss(loss)
        self.apply_gradients_with_rows(tape, loss, sampled, self.optimizer)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def apply_gradients_with_rows(self, tape, loss, sampled, optimizer) -> None:
        """A step's updates when the head owns its rows (TensorFlow): ``loss``'s gradients from
        ``tape``, the head's update of the rows ``sampled`` (its ``recording``) saw, then the
        optimizer's of every trainable weight."""
        variables = self.trainable_weights
        gradients = tape.gradient(loss, [*variables, sampled.weights])
        # The head first: it reads the learning rate, step (and loss scale) that the optimizer's
        # apply advances, so the optimizer must exist now (Keras builds it in its first apply).
        if not optimizer.built:
            optimizer.build(variables)
        self.head.apply_row_gradient(sampled, gradients.pop(), optimizer)
        if variables:
            optimizer.apply_gradients(zip(gradients, variables))

    def part(self, argument):
        return self.face_loss if argument == "loss" else super().part(argument)

    def call(self, images, training=False):
        embeddings = self.embedding_model(images, training=training)
        if self.head_uses_labels:
            if not self.head.built:  # its variables must exist before a checkpoint is restored
                self.head.build(tuple(embeddings.shape))
            return embeddings  # compute_loss applies the head, with the labels
        return self.head(embeddings, training=training)

    def batch_needs(self, augment):
        # Before any data is read: a head that samples classes by label takes one label per image.
        if self.head_uses_labels and getattr(augment, "mixes_labels", False):
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
