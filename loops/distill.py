"""Embedding distillation: a student matched to a frozen teacher's embeddings
(feature-based knowledge distillation for face models, e.g. a phone-sized student of a
server model; Hinton et al. 2015 for the idea, matching embeddings as in FitNets,
Romero et al., ICLR 2015).

    L = distill_weight * d(unit(student(x)), unit(teacher(x)))  [+ margin_weight * loss(y, head(student(x)))]

``distance``: ``cosine`` (1 - cos) or ``l2`` (squared distance of unit vectors,
= 2 - 2 cos, so the two differ by a factor 2; both ignore embedding length,
which verification ignores too). The teacher is an exported embedding model
(``runs/<name>/export/embedding.keras``) with the student's embedding size.
"""

from __future__ import annotations

import keras
from keras import ops

from loops.base import FaceLoop, l2_normalize, load_frozen_embedding_model, output_dim
from trainer.registry import LOOPS, ConfigError

DISTANCES = ("cosine", "l2")


@keras.saving.register_keras_serializable(package="facetrain")
class EmbeddingMatchLoss(keras.losses.Loss):
    """Per-sample distance between unit student and teacher embeddings (float32)."""

    def __init__(self, distance="cosine", name="embedding_match", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype or "float32")
        if distance not in DISTANCES:
            raise ConfigError(f"loop.distance '{distance}' is not one of {', '.join(DISTANCES)}")
        self.distance = distance

    def call(self, teacher, student):
        cosine = ops.sum(l2_normalize(teacher) * l2_normalize(student), axis=-1)
        return 1.0 - cosine if self.distance == "cosine" else 2.0 - 2.0 * cosine

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, "distance": self.distance}


@LOOPS.register("distill")
@keras.saving.register_keras_serializable(package="facetrain")
class DistillLoop(FaceLoop):
    """Student embedding → teacher's embedding (frozen), optionally plus the student's margin loss."""

    keras_parts = ("embedding_model", "head", "loss")

    def __init__(self, embedding_model, head=None, loss=None, teacher=None, distance="cosine",
                 distill_weight=1.0, margin_weight=0.0, **kwargs):
        margin_weight = float(margin_weight)
        if margin_weight and (head is None or loss is None):
            raise ConfigError("loop.margin_weight > 0 needs a head and a margin loss "
                              "(head=cosine loss=arcface)")
        # Without the margin term the head and loss are not built into the step.
        super().__init__(embedding_model, head if margin_weight else None,
                         loss if margin_weight else None, **kwargs)
        self.teacher_path = teacher
        self.teacher = load_frozen_embedding_model(teacher, "loop.teacher",
                                                   image_size=embedding_model.input_shape[1])
        if output_dim(self.teacher) != output_dim(embedding_model):
            raise ConfigError(f"loop.teacher makes {output_dim(self.teacher)}-d embeddings, the "
                              f"student {output_dim(embedding_model)}-d; set "
                              f"neck.embedding_dim={output_dim(self.teacher)}")
        self.margin_weight = margin_weight
        self.distill_weight = float(distill_weight)
        self.match_loss = EmbeddingMatchLoss(distance)

    def loop_config(self):
        return {"teacher": self.teacher_path, "distance": self.match_loss.distance,
                "distill_weight": self.distill_weight, "margin_weight": self.margin_weight}

    def call(self, images, training=False):
        student = self.embedding_model(images, training=training)
        outputs = {"student": student,
                   "teacher": ops.stop_gradient(self.teacher(images, training=False))}
        if self.head is not None:
            outputs["head"] = self.head(student, training=training)
        return outputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = self.distill_weight * self.match_loss(y_pred["teacher"], y_pred["student"],
                                                     sample_weight=sample_weight)
        if self.head is not None:
            loss = loss + self.margin_weight * self.face_loss(y, y_pred["head"],
                                                              sample_weight=sample_weight)
        return loss + self.regularization_loss()
