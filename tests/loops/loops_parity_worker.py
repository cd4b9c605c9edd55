"""Subprocess worker: every loop, one step on 2 logical CPU replicas vs one device.

Run as a script (logical devices must exist before TensorFlow initialises).
Prints one JSON line per loop: {"loop", "loss_1", "loss_2", "max_weight_error", ...}.
Both runs start from the same weights, take one SGD step (lr 1, no momentum, so a
weight change *is* the gradient) on the same global batch; the embedding model has
no batch norm (per-replica statistics are a model choice, not the loop's).
"""

import json
import os
import sys
import tempfile

import tensorflow as tf

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras  # noqa: E402
import numpy as np  # noqa: E402

from trainer.registry import HEADS, LOOPS, LOSSES  # noqa: E402

SIZE, CLASSES, DIM, BATCH = 16, 6, 8, 8


def embedding_model(seed):
    keras.utils.set_random_seed(seed)
    images = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, -1.0)(images)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, keras.layers.Dense(DIM)(x), name="embedding")


def exported(path, seed):
    from trainer.export.model_files import exportable

    exportable(embedding_model(seed)).save(path)
    return path


def batch(kind, rng):
    labels = np.repeat(np.arange(BATCH // 2), 2).astype(np.int32)  # pairs of identities
    shape = (BATCH, 2, SIZE, SIZE, 3) if kind == "views" else (BATCH, SIZE, SIZE, 3)
    return rng.uniform(0, 255, shape).astype(np.float32), labels


def deterministic_noise(self, reference):
    """Noise from the sample itself, so one device and two replicas draw the same."""
    axes = tuple(range(1, len(reference.shape)))
    mean = keras.ops.mean(reference, axis=axes, keepdims=False) / 255.0
    return keras.ops.sin(mean[:, None] * keras.ops.arange(1, self.latent_dim + 1, dtype="float32"))


def make(spec, folder):
    loss = LOSSES.build(spec["loss"], num_classes=CLASSES) if spec.get("loss") else None
    head = HEADS.build(spec["head"], num_classes=CLASSES) if spec.get("head") else None
    node = dict(spec["loop"])
    for key in ("old_model", "teacher"):
        if key in node:
            node[key] = exported(os.path.join(folder, f"{key}.keras"), 7)
    loop = LOOPS.build(node, embedding_model=embedding_model(0), head=head, loss=loss,
                       num_classes=CLASSES, config=None)
    if node["name"] == "bct":  # a fixed old classifier (prepare() would read a data set)
        means = np.random.default_rng(3).normal(size=(DIM, CLASSES))
        loop.old_classifier.assign((means / np.linalg.norm(means, axis=0)).astype(np.float32))
    return loop


def built(spec, folder, x):
    loop = make(spec, folder)
    loop.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=False)
    loop(x[:2])
    return loop


def one_step(spec, folder, strategy, x, y, initial):
    with strategy.scope():
        loop = built(spec, folder, x)
        loop.set_weights(initial)
    # fit on a dataset: the strategy splits the global batch (train_on_batch would give
    # every replica the whole batch)
    history = loop.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1, verbose=0)
    return loop, {k: float(v[-1]) for k, v in history.history.items()}


SPECS = [
    {"loop": {"name": "supervised"}, "head": {"name": "cosine"}, "loss": {"name": "arcface"}},
    {"loop": {"name": "pair"}, "loss": {"name": "triplet", "mining": "batch_all"}},
    {"loop": {"name": "simclr"}, "head": {"name": "projector", "hidden_dim": 16, "output_dim": 8},
     "loss": {"name": "ntxent", "temperature": 0.5}, "kind": "views"},
    {"loop": {"name": "supcon"}, "head": {"name": "projector", "hidden_dim": 16, "output_dim": 8},
     "loss": {"name": "supcon", "temperature": 0.5}, "kind": "views"},
    {"loop": {"name": "bct", "old_model": None, "evaluation_pairs": 0}, "head": {"name": "cosine"},
     "loss": {"name": "arcface"}},
    {"loop": {"name": "distill", "teacher": None, "margin_weight": 0.5}, "head": {"name": "cosine"},
     "loss": {"name": "arcface"}},
    {"loop": {"name": "gan", "latent_dim": 8, "generator_width": 8}, "head": {"name": "cosine"},
     "loss": {"name": "arcface"}},
]


def main():
    from loops.gan import FaceGenerator

    FaceGenerator.noise = deterministic_noise
    wanted = set(sys.argv[1:])
    single = tf.distribute.OneDeviceStrategy("/cpu:0")
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with tempfile.TemporaryDirectory() as folder:
        for spec in SPECS:
            name = spec["loop"]["name"]
            if wanted and name not in wanted:
                continue
            try:
                x, y = batch(spec.get("kind"), np.random.default_rng(1))
                before = built(spec, folder, x).get_weights()
                one, logs_1 = one_step(spec, folder, single, x, y, before)
                two, logs_2 = one_step(spec, folder, mirrored, x, y, before)
                weights_1, weights_2 = one.get_weights(), two.get_weights()
                error = max(float(np.max(np.abs(a - b))) for a, b in zip(weights_1, weights_2))
                moved = max(float(np.max(np.abs(a - b))) for a, b in zip(weights_1, before))
                result = {"loop": name, "loss_1": logs_1["loss"], "loss_2": logs_2["loss"],
                          "max_weight_error": error, "max_update": moved}
                if name == "simclr":  # the loss with per-replica negatives only, for contrast
                    loss = LOSSES.build(spec["loss"])
                    start = built(spec, folder, x)
                    start.set_weights(before)
                    z = keras.ops.convert_to_numpy(start(x, training=True))
                    halves = [z[:BATCH // 2], z[BATCH // 2:]]
                    result["per_replica_negatives_loss"] = float(np.mean(
                        [loss(None, np.concatenate([h[:, 0], h[:, 1]])) for h in halves]))
                    result["global_negatives_loss"] = float(
                        loss(None, np.concatenate([z[:, 0], z[:, 1]])))
            except Exception as error:  # one broken loop must not hide the others
                result = {"loop": name, "error": f"{type(error).__name__}: {str(error)[:300]}"}
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
