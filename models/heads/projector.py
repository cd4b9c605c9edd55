"""SimCLR projection head (Chen et al., ICML 2020): an MLP g(h) on top of the embedding.

The contrastive loss acts on ``z = g(h)``; the embedding ``h`` (the neck's
output) is what is kept, evaluated and exported. SimCLR's head is
Linear → BN → ReLU → Linear; the batch norm is *synchronised* across replicas
(global-batch statistics under ``tf.distribute``, as in the paper's TPU runs),
so two replicas compute what one device computes on the same global batch.
"""

import keras

from models.heads.base import FaceHead
from trainer.registry import HEADS

# Global-batch statistics across tf.distribute replicas; under JAX the step is one SPMD
# program over the global batch already (and Keras accepts the flag only with TensorFlow).
SYNC_BN = keras.backend.backend() == "tensorflow"


@HEADS.register("projector")
@keras.saving.register_keras_serializable(package="facetrain")
class ProjectorHead(FaceHead):
    """Embeddings (B, D) → projections (B, output_dim), float32."""

    def __init__(self, hidden_dim=256, output_dim=128, num_layers=2, batch_norm=True, **kwargs):
        super().__init__(**kwargs)
        if int(num_layers) < 1:
            raise ValueError(f"projector head needs num_layers >= 1, got {num_layers}")
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        self.num_layers = int(num_layers)
        self.batch_norm = bool(batch_norm)
        self.blocks = []
        for index in range(self.num_layers - 1):
            block = [keras.layers.Dense(self.hidden_dim, use_bias=not self.batch_norm,
                                        name=f"hidden_{index}")]
            if self.batch_norm:
                block.append(keras.layers.BatchNormalization(synchronized=SYNC_BN, name=f"bn_{index}"))
            block.append(keras.layers.ReLU(name=f"relu_{index}"))
            self.blocks.extend(block)
        # The last layer in float32: the loss normalises and divides by a small temperature.
        self.output_layer = keras.layers.Dense(self.output_dim, dtype="float32", name="projection")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.blocks:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.output_layer.build(shape)

    def call(self, embeddings, training=False):
        x = embeddings
        for layer in self.blocks:
            x = layer(x, training=training) if isinstance(layer, keras.layers.BatchNormalization) \
                else layer(x)
        return self.output_layer(x)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.output_dim)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim,
                "output_dim": self.output_dim, "num_layers": self.num_layers,
                "batch_norm": self.batch_norm}
