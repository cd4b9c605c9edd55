"""What every training loop shares: the embedding model, head, loss and its state,
regulariser losses, and the train step of a head that updates its own weights (frozen
reference models load with ``trainer.export``).

A loop is a ``keras.Model`` whose ``fit`` is Keras's own. Subclasses override
``compute_loss`` (portable: Keras's per-backend ``train_step`` does the gradient
work) and only where they must, ``train_step`` (several optimizers: ``loops.gan``).

The base keeps the constructor's runtime values under one name each: ``head``,
``face_loss`` (the loss; ``keras.Model`` keeps ``loss`` for ``compile``) and
``loss_state``, the loss's state layer (AdaFace's norm statistics, CurricularFace's
``t``, ...), tracked here so that it lands in checkpoints and in JAX's state.

Distribution: under ``tf.distribute`` each replica runs ``compute_loss`` on its
shard, Keras scales a reduced loss by ``1 / replicas`` and sums the gradients.
Losses that compare samples with each other (contrastive, triplet) must see the
*global* batch: ``trainer.collectives.gather_global`` concatenates every replica's
rows in replica order, with a gradient that makes the summed gradients equal to
those of one device on the whole batch. Under JAX, ``keras.distribution`` shards
one global program, so the batch is already global and nothing is gathered.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import ops

from losses.base import state_of
from models.heads.own_update import own_update_step
from trainer.export.model_files import load_embedding_model as load_frozen_embedding_model  # noqa: F401 (loops' name)
# Public here: a loop that adds a loss term of its own scales it per replica with this.
from trainer.keras_private import scale_loss_for_distribution  # noqa: F401
from trainer.normalize import l2_normalize as normalize
from trainer.registry import ConfigError


class FaceLoop(keras.Model):
    """Base class: owns ``embedding_model`` (images 0..255 → embedding), used for eval and export,
    and, when the loop takes them, the ``head`` and the loss (``face_loss``, its state ``loss_state``)."""

    def __init__(self, embedding_model, head=None, loss=None, **kwargs):
        super().__init__(**kwargs)
        if embedding_model is None:
            raise ConfigError(f"loop '{type(self).__name__}' needs an embedding model")
        self.embedding_model = embedding_model
        self.head = head
        self.face_loss = loss
        # Stateful losses (AdaFace, CurricularFace, AdaCos) keep their state in a layer;
        # tracking it here puts it in checkpoints and in JAX's state.
        self.loss_state = state_of(loss)
        # A head that updates its own weights (partial_fc under TensorFlow) brings its step.
        self.own_update_step = own_update_step(head)

    # Constructor arguments that are Keras objects (serialised in get_config), and plain ones.
    keras_parts: tuple = ("embedding_model",)

    def loop_config(self) -> dict:
        """The subclass's plain constructor parameters (override)."""
        return {}

    def get_config(self):
        config = keras.layers.Layer.get_config(self)  # name, trainable, dtype
        held = {"embedding_model": self.embedding_model, "head": self.head, "loss": self.face_loss}
        for argument in self.keras_parts:
            value = held[argument]
            config[argument] = None if value is None else keras.saving.serialize_keras_object(value)
        config.update(self.loop_config())
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for argument in cls.keras_parts:
            if config.get(argument) is not None:
                config[argument] = keras.saving.deserialize_keras_object(config[argument])
        return cls(**config)

    def compile(self, optimizer="rmsprop", **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        if self.own_update_step is not None:
            self.own_update_step.compile(self)

    def train_step(self, *args):  # (data) under TensorFlow, (state, data) under JAX
        if self.own_update_step is None:
            return super().train_step(*args)
        return self.own_update_step.train_step(self, *args)

    # trainer/commands/bench/minimal_step.py reads these two; they go when it uses own_update_step.
    @property
    def head_owns_update(self) -> bool:
        return self.own_update_step is not None

    def apply_gradients_with_rows(self, tape, loss, sampled, optimizer) -> None:
        self.own_update_step.apply_gradients(self.trainable_weights, tape, loss, sampled, optimizer)

    def embed(self, images, training=False):
        return self.embedding_model(images, training=training)

    def regularization_loss(self):
        """Sum of the layers' ``add_loss`` terms, scaled like Keras scales its own under replicas."""
        if not self.losses:
            return 0.0
        return scale_loss_for_distribution(ops.sum(ops.stack(
            [ops.cast(loss, "float32") for loss in self.losses])))

    # -- the contract with the runner (trainer.run): hooks it calls, in this order -----------
    def batch_needs(self, augment) -> "BatchNeeds":
        """What the training batches must be; the data pipeline builds them (never the loop).

        ``augment`` is the configured augmentation (None, a pipeline or a multi-view);
        raise ``ConfigError`` here when it does not suit the loop.
        """
        return BatchNeeds()

    def prepare(self, source) -> None:
        """Before the first training step of a run (also a resumed one): per-run statistics
        the loop needs from the data (BCT: the old model's class means)."""

    def epoch_callbacks(self, source) -> list:
        """Keras callbacks only this loop can provide (BCT: old-vs-new verification per epoch)."""
        return []

    def final_metrics(self, source) -> dict:
        """Numbers only this loop can measure, merged into ``metrics.json`` ``final``."""
        return {}


@dataclass(frozen=True)
class BatchNeeds:
    """What a loop's training batches must be (``FaceLoop.batch_needs``).

    ``sampling``: ``uniform`` (each epoch a seeded shuffle of every image) or
    ``identities`` (P×K: ``images_per_identity`` images of each of P identities
    per batch, for mined pair losses). ``views``: independently augmented views
    of each image (> 1: images (B, V, H, W, 3) from a multi-view augmentation;
    1: the augmentation as configured).
    """

    sampling: str = "uniform"
    images_per_identity: int = 0
    views: int = 1


def output_dim(model: keras.Model) -> int:
    return int(model.output_shape[-1])


def l2_normalize(x):
    """Unit rows in float32 (cosines near ±1 are what margins act on)."""
    return normalize(ops.cast(x, "float32"))
