"""Normalised-weight cosine classifier (NormFace / ArcFace head), with optional sub-centres.

``cos[b, j] = max_k  w_{j,k}^T x_b / (||w_{j,k}|| ||x_b||)`` for K sub-centres per
class (Sub-center ArcFace, Deng et al., ECCV 2020; K = 1 is the plain head).
The head also returns the embedding norms, so norm-aware losses (MagFace,
AdaFace) need no second forward pass. Everything is computed in float32, even
under a mixed-precision policy: cosines near +-1 are what margins act on.
"""

import keras
from keras import ops

from models.heads.base import FaceHead
from trainer.registry import HEADS


@HEADS.register("cosine")
@keras.saving.register_keras_serializable(package="facetrain")
class CosineHead(FaceHead):
    """Maps embeddings (B, D) to ``{"cos": (B, num_classes), "norm": (B, 1)}``, both float32."""

    def __init__(self, num_classes, sub_centers=1, kernel_initializer="glorot_normal",
                 epsilon=1e-6, **kwargs):
        # A float32 policy makes Keras cast incoming (maybe float16) embeddings up.
        kwargs["dtype"] = kwargs.get("dtype") or "float32"
        super().__init__(**kwargs)
        if int(num_classes) < 1 or int(sub_centers) < 1:
            raise ValueError(f"cosine head needs num_classes >= 1 and sub_centers >= 1, "
                             f"got {num_classes} and {sub_centers}")
        self.num_classes = int(num_classes)
        self.sub_centers = int(sub_centers)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], self.num_classes * self.sub_centers),
            initializer=self.kernel_initializer, dtype="float32", autocast=False)

    def call(self, embeddings):
        embeddings = ops.cast(embeddings, "float32")
        norm = ops.sqrt(ops.maximum(ops.sum(ops.square(embeddings), axis=-1, keepdims=True),
                                    self.epsilon ** 2))
        kernel = ops.cast(self.kernel, "float32")
        kernel_norm = ops.sqrt(ops.maximum(ops.sum(ops.square(kernel), axis=0, keepdims=True),
                                           self.epsilon ** 2))
        cos = ops.matmul(embeddings / norm, kernel / kernel_norm)
        if self.sub_centers > 1:
            # Columns are class-major: class j owns columns j*K .. j*K + K - 1.
            cos = ops.max(ops.reshape(cos, (-1, self.num_classes, self.sub_centers)), axis=-1)
        return {"cos": cos, "norm": norm}

    def compute_output_spec(self, embeddings):
        batch = embeddings.shape[0]
        return {"cos": keras.KerasTensor((batch, self.num_classes), dtype="float32"),
                "norm": keras.KerasTensor((batch, 1), dtype="float32")}

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "sub_centers": self.sub_centers,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "epsilon": self.epsilon}
