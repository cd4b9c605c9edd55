"""Backward-compatible training (BCT; Shen et al., CVPR 2020).

After a model update, the embeddings already stored for a gallery (millions of
photos) were made by the OLD model. BCT trains the new model so that its
embeddings can be compared with old ones directly: besides its own classifier
loss, the new embedding is classified by the OLD model's frozen classifier
(the "influence loss"):

    L = loss(y, head_new(phi_new(x))) + lambda * loss(y, W_old^T phi_new(x))

The old classifier. Only the exported old *embedding* model is at hand (the
default job's ``runs/<name>/export/embedding.keras``; margin-loss classifiers
are not exported). BCT's paper notes that for new classes the old classifier
can be made of the old model's class means; we do that for all classes:
``W_old[:, c]`` = the L2-normalised mean of the old model's (normalised)
embeddings of class c over the training set, computed once before training
(``prepare``) and frozen. For a cosine-margin old model this is its class
centre up to the in-class spread, which is what the influence term needs.

Reports, at each epoch end, verification accuracy on the held-out pairs for
new-vs-new, old-vs-old and old-vs-new (the gallery made by the old model, the
query by the new one): ``bct_new_accuracy``, ``bct_old_accuracy``,
``bct_cross_accuracy`` in the epoch logs (``metrics.json`` ``epochs``).
``python -m trainer.tools.cross_model --old A.keras --new B.keras`` measures any two exports.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from loops.base import l2_normalize, load_frozen_embedding_model, output_dim
from loops.supervised import SupervisedLoop
from losses.base import state_of
from trainer.normalize import l2_normalize_numpy
from trainer.registry import LOOPS, ConfigError


@LOOPS.register("bct")
@keras.saving.register_keras_serializable(package="facetrain")
class BCTLoop(SupervisedLoop):
    """Supervised loop plus the influence loss through the old model's frozen class means."""

    def __init__(self, embedding_model, head, loss, num_classes, old_model=None,
                 influence_weight=1.0, evaluation_pairs=1000, **kwargs):
        super().__init__(embedding_model, head, loss, **kwargs)
        if head is None or loss is None:
            raise ConfigError("loop=bct trains a classifier: it needs a head (head=cosine) and a "
                              "margin loss (loss=arcface)")
        self.old_model_path = old_model
        self.old_model = load_frozen_embedding_model(
            old_model, "loop.old_model", image_size=embedding_model.input_shape[1])
        new_dim, old_dim = output_dim(embedding_model), output_dim(self.old_model)
        if new_dim != old_dim:
            raise ConfigError(f"loop.old_model makes {old_dim}-d embeddings, the new model "
                              f"{new_dim}-d; compatible embeddings need neck.embedding_dim={old_dim}")
        self.num_classes = int(num_classes)
        self.influence_weight = float(influence_weight)
        self.evaluation_pairs = int(evaluation_pairs)
        # A second copy of the loss: stateful losses keep separate statistics per classifier.
        self.influence_loss = type(loss).from_config(loss.get_config())
        self.influence_state = state_of(self.influence_loss)
        self.old_classifier = self.add_weight(
            name="old_classifier", shape=(old_dim, self.num_classes), initializer="zeros",
            dtype="float32", trainable=False, autocast=False)
        self.prepared = False

    def loop_config(self):
        return {"num_classes": self.num_classes, "old_model": self.old_model_path,
                "influence_weight": self.influence_weight,
                "evaluation_pairs": self.evaluation_pairs}

    def call(self, images, training=False):
        embedding = self.embedding_model(images, training=training)
        unit = l2_normalize(embedding)
        old_cos = ops.matmul(unit, self.old_classifier)
        norm = ops.sqrt(ops.maximum(ops.sum(ops.square(ops.cast(embedding, "float32")), axis=-1,
                                            keepdims=True), 1e-12))
        return {"new": self.head(embedding, training=training), "old": {"cos": old_cos, "norm": norm}}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        new = self.face_loss(y, y_pred["new"], sample_weight=sample_weight)
        influence = self.influence_loss(y, y_pred["old"], sample_weight=sample_weight)
        return new + self.influence_weight * influence + self.regularization_loss()

    def final_metrics(self, data) -> dict:
        """Old-vs-new (cross-model) verification next to new-vs-new, for ``metrics.json`` final."""
        if data.heldout() is None:
            return {}
        scores = data.cross_model_verification(self.old_model, self.embedding_model, self.evaluation_pairs)
        return {"bct": {f"{key}_accuracy": value for key, value in scores.items()}}

    # -- before training: the old classifier ---------------------------------
    def prepare(self, data) -> None:
        """Fill the frozen old classifier with the old model's normalised class means."""
        if data.num_classes != self.num_classes:
            raise ConfigError(f"loop=bct: the data set has {data.num_classes} classes, the loop "
                              f"was built for {self.num_classes}")
        if not self.prepared:
            means = class_means(self.old_model, data.train_batches(256), self.num_classes)
            self.old_classifier.assign(means.T.astype(np.float32))
            self.prepared = True

    def epoch_callbacks(self, data) -> list:
        if data.heldout() is None or not self.evaluation_pairs:
            return []
        return [CrossModelVerification(self.old_model, data, self.evaluation_pairs)]


def class_means(model, batches, num_classes: int) -> np.ndarray:
    """(num_classes, D) L2-normalised means of ``model``'s normalised embeddings per class.

    ``batches``: NumPy (images, labels) batches of the whole training set.
    """
    sums, counts = None, np.zeros(num_classes, np.float64)
    for images, labels in batches:
        embeddings = np.asarray(model(images.astype(np.float32), training=False), np.float64)
        embeddings = l2_normalize_numpy(embeddings, axis=1)
        if sums is None:
            sums = np.zeros((num_classes, embeddings.shape[1]))
        np.add.at(sums, labels, embeddings)
        np.add.at(counts, labels, 1)
    if sums is None:
        raise ConfigError("loop=bct: the training set is empty; the old classifier needs images")
    return l2_normalize_numpy(sums, axis=1)


class CrossModelVerification(keras.callbacks.Callback):
    """Adds ``bct_{new,old,cross}_accuracy`` to the epoch logs."""

    def __init__(self, old_model, data, pairs: int):
        super().__init__()
        self.old_model, self.data, self.pairs = old_model, data, pairs

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        scores = self.data.cross_model_verification(self.old_model, self.model.embedding_model, self.pairs)
        logs.update({f"bct_{key}_accuracy": value for key, value in scores.items()})
