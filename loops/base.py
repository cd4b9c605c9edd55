"""What every training loop shares: the embedding model, regulariser losses, the global
batch under ``tf.distribute`` (frozen reference models load with ``trainer.export``).

A loop is a ``keras.Model`` whose ``fit`` is Keras's own. Subclasses override
``compute_loss`` (portable: Keras's per-backend ``train_step`` does the gradient
work) and only where they must, ``train_step`` (several optimizers: ``loops.gan``).

Distribution: under ``tf.distribute`` each replica runs ``compute_loss`` on its
shard, Keras scales a reduced loss by ``1 / replicas`` and sums the gradients.
Losses that compare samples with each other (contrastive, triplet) must see the
*global* batch: :func:`gather_global` concatenates every replica's rows in
replica order, and its gradient (TensorFlow's ``all_gather`` gradient: an
all-reduce sum, then this replica's slice) makes the summed gradients equal to
those of one device on the whole batch. Under JAX, ``keras.distribution`` shards
one global program, so the batch is already global and nothing is gathered.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import ops

from trainer.export.model_files import load_embedding_model as load_frozen_embedding_model  # noqa: F401 (loops' name)
# Public here: a loop that adds a loss term of its own scales it per replica with this.
from trainer.keras_private import scale_loss_for_distribution  # noqa: F401
from trainer.normalize import l2_normalize as normalize
from trainer.registry import ConfigError


class FaceLoop(keras.Model):
    """Base class: owns ``embedding_model`` (images 0..255 → embedding), used for eval and export."""

    def __init__(self, embedding_model, **kwargs):
        super().__init__(**kwargs)
        if embedding_model is None:
            raise ConfigError(f"loop '{type(self).__name__}' needs an embedding model")
        self.embedding_model = embedding_model

    # Constructor arguments that are Keras objects (serialised in get_config), and plain ones.
    keras_parts: tuple = ("embedding_model",)

    def loop_config(self) -> dict:
        """The subclass's plain constructor parameters (override)."""
        return {}

    def part(self, argument: str):
        """The object behind constructor argument ``argument`` (override if stored elsewhere)."""
        return getattr(self, argument)

    def get_config(self):
        config = keras.layers.Layer.get_config(self)  # name, trainable, dtype
        for argument in self.keras_parts:
            value = self.part(argument)
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


def num_replicas() -> int:
    """Replicas of the current ``tf.distribute`` strategy (1 outside it and under JAX)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def gather_global(*tensors):
    """Every replica's rows, concatenated in replica order (identity on one device / JAX).

    Differentiable: the gradient that reaches a replica's rows is the sum of
    every replica's gradient with respect to them.
    """
    if num_replicas() == 1:
        return tensors if len(tensors) > 1 else tensors[0]
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: values are already whole
        return tensors if len(tensors) > 1 else tensors[0]
    gathered = tuple(_gather(context, t, tf) for t in tensors)
    return gathered if len(gathered) > 1 else gathered[0]


def _gather(context, tensor, tf):
    """One tensor's all_gather, with its static shape restored (all_gather loses it)."""
    tensor = tf.convert_to_tensor(tensor)
    if not tensor.dtype.is_floating:  # labels: no gradient to route
        tensor = tf.stop_gradient(tensor)
    gathered = context.all_gather(tensor, axis=0)
    rows = None if tensor.shape[0] is None else tensor.shape[0] * context.num_replicas_in_sync
    return tf.ensure_shape(gathered, [rows, *tensor.shape[1:]])


def output_dim(model: keras.Model) -> int:
    return int(model.output_shape[-1])


def l2_normalize(x):
    """Unit rows in float32 (cosines near ±1 are what margins act on)."""
    return normalize(ops.cast(x, "float32"))
