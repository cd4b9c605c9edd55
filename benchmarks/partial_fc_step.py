"""Step time of the partial_fc head at a sampled rate against the full (rate 1.0) head.

    python benchmarks/partial_fc_step.py [--classes 1000000] [--dim 512] [--batch 64]
        [--rates 1.0 0.1] [--steps 5] [--optimizer sgd]

One device, TensorFlow, XLA: the head, ArcFace, the backward pass into the
embeddings and the centres, and the optimizer update (SGD with momentum as in
arcface_torch, or AdamW) — the part of a training step that grows with the class
count. The backbone is left out: its cost does not depend on the sample rate.
Prints one JSON line per rate and the ratio to the first rate. Run it once; it
takes minutes at a million classes (the full head reads and writes every row).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def measure(classes, dim, batch, rate, steps, optimizer_name):
    import keras
    import tensorflow as tf

    import trainer

    head = trainer.build("head", {"name": "partial_fc", "sample_rate": rate}, num_classes=classes)
    loss = trainer.build("loss", {"name": "arcface"}, num_classes=classes)
    head.build((batch, dim))
    embeddings = keras.Variable(np.random.default_rng(0).normal(size=(batch, dim)).astype("float32"))
    optimizer = (keras.optimizers.SGD(0.1, momentum=0.9) if optimizer_name == "sgd"
                 else keras.optimizers.AdamW(1e-3))
    variables = [embeddings, head.centers]
    optimizer.build(variables)
    labels = tf.constant(np.random.default_rng(1).integers(0, classes, batch).astype("int32"))

    @tf.function(jit_compile=True)
    def step():
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(head.per_sample_loss(loss, embeddings.value, labels, training=True))
        optimizer.apply(tape.gradient(value, [v.value for v in variables]), variables)
        return value

    step().numpy()  # trace and compile
    step().numpy()
    start = time.perf_counter()
    for _ in range(steps):
        value = step()
    value.numpy()
    seconds = (time.perf_counter() - start) / steps
    return {"classes": classes, "dim": dim, "batch": batch, "sample_rate": rate,
            "rows_per_step": head.num_sampled(head.rows, batch), "optimizer": optimizer_name,
            "seconds_per_step": round(seconds, 4)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    args = parser.parse_args(argv)
    first = None
    for rate in args.rates:
        result = measure(args.classes, args.dim, args.batch, rate, args.steps, args.optimizer)
        first = first or result["seconds_per_step"]
        result["ratio_to_first"] = round(result["seconds_per_step"] / first, 3)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
