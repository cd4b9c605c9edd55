"""The train step of a head that updates its own weights (``FaceHead.owns_update``).

``head=partial_fc`` under TensorFlow keeps its class centres split across the
replicas, each replica owning different rows; a Keras optimizer would sum the
replicas' gradients and apply one update to every copy. So the step is Keras's
own, with two additions: the tape also watches the rows the head read this step
(``head.recording``), and their gradient goes to the head (``apply_own_gradient``)
before the Keras optimizer updates every trainable weight. Any loop whose head
owns its update trains with this step (``loops.base.FaceLoop.train_step``), so no
loop special-cases it; the bench's minimal step uses :meth:`OwnUpdateStep.apply_gradients`.
"""

from __future__ import annotations

import keras

from models.heads.base import FaceHead
from trainer.keras_private import track_loss


class OwnUpdateStep:
    """Keras's TensorFlow train step plus the head's own update of the weights it read."""

    def __init__(self, head: FaceHead):
        self.head = head

    def compile(self, loop: keras.Model) -> None:
        """At the loop's compile: the head's weights, then its optimizer slots for them."""
        if not self.head.built:  # eagerly and in the strategy's scope: each replica draws its rows
            self.head.build((None, int(loop.embedding_model.output_shape[-1])))
        self.head.use_optimizer(loop.optimizer)  # it keeps its own slots: it must know the rule now

    def recording(self, tape):
        return self.head.recording(tape)

    def train_step(self, loop: keras.Model, data):
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = loop(x, training=True)
            with self.recording(tape) as recorded:
                loss = loop.compute_loss(x, y, y_pred, sample_weight, training=True)
            track_loss(loop, loss, tf.shape(x)[0])
            loss = loop.optimizer.scale_loss(loss)
        self.apply_gradients(loop.trainable_weights, tape, loss, recorded, loop.optimizer)
        return loop.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def apply_gradients(self, variables, tape, loss, recorded, optimizer) -> None:
        """``loss``'s gradients from ``tape``: the head's update of what ``recorded`` saw, then the
        optimizer's of ``variables`` (the loop's trainable weights)."""
        gradients = tape.gradient(loss, [*variables, recorded.weights])
        # The head first: it reads the learning rate, step (and loss scale) that the optimizer's
        # apply advances, so the optimizer must exist now (Keras builds it in its first apply).
        if not optimizer.built:
            optimizer.build(variables)
        self.head.apply_own_gradient(recorded, gradients.pop(), optimizer)
        if variables:
            optimizer.apply_gradients(zip(gradients, variables))


def own_update_step(head) -> OwnUpdateStep | None:
    """The step for ``head`` if it updates its own weights, else None (Keras's step trains it)."""
    if isinstance(head, FaceHead) and head.uses_labels and head.owns_update:
        return OwnUpdateStep(head)
    return None
