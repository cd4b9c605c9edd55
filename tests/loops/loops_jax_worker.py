"""Subprocess worker (KERAS_BACKEND=jax): supervised, simclr and gan loops train under JAX.

Prints one JSON line per loop: the losses of two fit epochs, whether weights moved and
(gan) both optimizers' step counters.
"""

import json

import keras
import numpy as np

from trainer.registry import HEADS, LOOPS, LOSSES

SIZE, CLASSES, BATCH = 16, 4, 8


def embedding_model():
    images = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, -1.0)(images)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, keras.layers.Dense(8)(x))


SPECS = {
    "supervised": ({"name": "cosine"}, {"name": "arcface", "scale": 16.0}, False),
    "simclr": ({"name": "projector", "hidden_dim": 16, "output_dim": 8},
               {"name": "ntxent", "temperature": 0.5}, True),
    "gan": ({"name": "cosine"}, {"name": "arcface", "scale": 16.0}, False),
}


def main():
    assert keras.backend.backend() == "jax"
    rng = np.random.default_rng(0)
    for name, (head_node, loss_node, views) in SPECS.items():
        keras.utils.set_random_seed(0)
        loop = LOOPS.build({"name": name}, embedding_model=embedding_model(),
                           head=HEADS.build(head_node, num_classes=CLASSES),
                           loss=LOSSES.build(loss_node, num_classes=CLASSES),
                           num_classes=CLASSES, config=None)
        loop.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
        shape = (BATCH * 2, 2, SIZE, SIZE, 3) if views else (BATCH * 2, SIZE, SIZE, 3)
        x = rng.uniform(0, 255, shape).astype(np.float32)
        y = (np.arange(BATCH * 2) % CLASSES).astype(np.int32)
        loop(x[:2])
        before = [np.array(w) for w in loop.embedding_model.get_weights()]
        history = loop.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, shuffle=False)
        after = loop.embedding_model.get_weights()
        result = {"loop": name, "losses": [float(v) for v in history.history["loss"]],
                  "moved": max(float(np.max(np.abs(a - b))) for a, b in zip(after, before))}
        if name == "gan":
            result["d_steps"] = int(loop.optimizer.iterations.numpy())
            result["g_steps"] = int(np.asarray(loop.generator_optimizer.iterations.value))
            result["g_loss"] = [float(v) for v in history.history["g_loss"]]
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
