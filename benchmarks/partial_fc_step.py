"""Step time of the partial_fc head at a sampled rate against the full (rate 1.0) head.

    python benchmarks/partial_fc_step.py [--classes 1000000] [--dim 512] [--batch 64]
        [--rates 1.0 0.1] [--steps 5] [--optimizer sgd]

One device, TensorFlow, XLA, the supervised loop's own train step: a one-layer
embedding model, the head, ArcFace, the backward pass, the Keras optimizer on the
embedding layer and the head's update of the rows it sampled (SGD with momentum as
in arcface_torch, or AdamW) — the part of a training step that grows with the class
count; a real backbone adds the same cost at every rate. Prints one JSON line per
rate and the ratio to the first rate. It takes minutes at a million classes.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def measure(classes, dim, batch, rate, steps, optimizer_name):
    import keras

    import trainer

    keras.backend.clear_session()  # free the previous rate's head before building this one
    head = trainer.build("head", {"name": "partial_fc", "sample_rate": rate}, num_classes=classes)
    loss = trainer.build("loss", {"name": "arcface"}, num_classes=classes)
    inputs = keras.Input((dim,))
    embedding_model = keras.Model(inputs, keras.layers.Dense(dim)(inputs))
    loop = trainer.build("loop", "supervised", embedding_model=embedding_model, head=head, loss=loss)
    optimizer = (keras.optimizers.SGD(0.1, momentum=0.9) if optimizer_name == "sgd"
                 else keras.optimizers.AdamW(1e-3))
    loop.compile(optimizer=optimizer, jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, dim)).astype("float32")
    y = rng.integers(0, classes, batch).astype("int32")
    loop.train_on_batch(x, y)  # trace and compile
    loop.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        value = loop.train_on_batch(x, y)
    seconds = (time.perf_counter() - start) / steps
    assert np.isfinite(value), value
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
