"""Offline check that the synthetic face data makes training matter.

Renders the data, then reports held-out verification accuracy (10-fold,
best threshold chosen on 9 folds) for raw pixels, an untrained CNN, and the
same CNN trained for a few epochs with a cosine-softmax (NormFace/ArcFace)
head. Not a test: it takes minutes.

    python scripts/check_synthetic_faces.py --size 32 --epochs 12
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from trainer.data import face_renderer  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--train-identities", type=int, default=600)
    parser.add_argument("--images-per-identity", type=int, default=10)
    parser.add_argument("--test-identities", type=int, default=100)
    parser.add_argument("--test-images-per-identity", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variation", type=float, default=1.0,
                        help="nuisance strength relative to the renderer's default")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--width", type=int, default=16, help="filters of the first block")
    parser.add_argument("--convs-per-block", type=int, default=1)
    parser.add_argument("--scale", type=float, default=30.0)
    parser.add_argument("--arcface-margin", type=float, default=0.0,
                        help="0 gives NormFace; e.g. 0.3 gives ArcFace")
    parser.add_argument("--pairs", type=int, default=3000, help="positive (= negative) pairs")
    parser.add_argument("--via-tfds", action="store_true",
                        help="also time generation through the TFDS builder")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------
# Verification protocol


def sample_pairs(labels: np.ndarray, count: int, seed: int):
    """`count` positive and `count` negative index pairs, seeded."""
    rng = np.random.default_rng(seed)
    by_label = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    firsts, seconds, same = [], [], []
    for _ in range(count):
        members = by_label[rng.integers(len(by_label))]
        a, b = rng.choice(members, size=2, replace=False)
        firsts.append(a), seconds.append(b), same.append(True)
    for _ in range(count):
        la, lb = rng.choice(len(by_label), size=2, replace=False)
        firsts.append(rng.choice(by_label[la])), seconds.append(rng.choice(by_label[lb]))
        same.append(False)
    return np.array(firsts), np.array(seconds), np.array(same)


def cosine_scores(embeddings: np.ndarray, firsts, seconds) -> np.ndarray:
    unit = embeddings / (np.linalg.norm(embeddings, axis=1, keepdims=True) + 1e-12)
    return np.sum(unit[firsts] * unit[seconds], axis=1)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """Threshold maximising accuracy on these pairs (midpoints between scores)."""
    order = np.argsort(scores)
    sorted_scores, sorted_same = scores[order], same[order]
    # Predict "same" for everything above the cut: accuracy for each cut.
    positives_above = np.concatenate([[sorted_same.sum()], sorted_same.sum() - np.cumsum(sorted_same)])
    negatives_below = np.concatenate([[0], np.cumsum(~sorted_same)])
    correct = positives_above + negatives_below
    cut = int(np.argmax(correct))
    if cut == 0:
        return float(sorted_scores[0] - 1e-6)
    if cut == len(scores):
        return float(sorted_scores[-1] + 1e-6)
    return float(0.5 * (sorted_scores[cut - 1] + sorted_scores[cut]))


def ten_fold_accuracy(scores: np.ndarray, same: np.ndarray, seed: int = 0) -> float:
    """LFW-style accuracy: threshold from 9 folds, accuracy on the 10th."""
    folds = np.array_split(np.random.default_rng(seed).permutation(len(scores)), 10)
    accuracies = []
    for held_out in folds:
        fit = np.setdiff1d(np.arange(len(scores)), held_out)
        threshold = best_threshold(scores[fit], same[fit])
        accuracies.append(np.mean((scores[held_out] > threshold) == same[held_out]))
    return float(np.mean(accuracies))


def verification_accuracy(embeddings, pairs) -> float:
    firsts, seconds, same = pairs
    return ten_fold_accuracy(cosine_scores(embeddings, firsts, seconds), same)


# --------------------------------------------------------------------------
# Model


def build_embedding_model(size: int, width: int, convs_per_block: int = 1):
    """4 conv blocks (conv-BN-ReLU x n, 2x2 max-pool), global average pool, 128-d."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    for block in range(4):
        filters = width * 2 ** block
        for _ in range(convs_per_block):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        if block < 3:
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    embedding = layers.Dense(128, name="embedding")(x)
    return keras.Model(inputs, embedding, name="face_embedder")


def build_cosine_classifier(embedder, num_classes: int, scale: float, margin: float):
    """Training model: normalised embedding x normalised class weights, scaled."""
    import keras
    from keras import layers, ops

    class CosineLogits(layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(
                shape=(input_shape[0][-1], num_classes), initializer="glorot_normal",
                name="class_centres")

        def call(self, inputs):
            embedding, labels = inputs
            cosine = ops.matmul(ops.normalize(embedding, axis=-1),
                                ops.normalize(self.kernel, axis=0))
            if margin > 0:
                # ArcFace: add the angular margin to the target class only.
                cosine_clipped = ops.clip(cosine, -1 + 1e-6, 1 - 1e-6)
                with_margin = ops.cos(ops.arccos(cosine_clipped) + margin)
                target = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), num_classes)
                cosine = target * with_margin + (1 - target) * cosine
            return scale * cosine

    images = keras.Input(embedder.input_shape[1:])
    labels = keras.Input((), dtype="int64")
    logits = CosineLogits()([embedder(images), labels])
    return keras.Model([images, labels], logits)


# --------------------------------------------------------------------------
# Main


def render_data(args):
    variation = face_renderer.DEFAULT_NUISANCE.scaled(args.variation)
    start = time.perf_counter()
    train = face_renderer.render_split(args.train_identities, args.images_per_identity,
                                       args.size, args.seed, identity_offset=0,
                                       variation=variation)
    test = face_renderer.render_split(args.test_identities, args.test_images_per_identity,
                                      args.size, args.seed,
                                      identity_offset=args.train_identities,
                                      variation=variation)
    elapsed = time.perf_counter() - start
    count = len(train.images) + len(test.images)
    print(f"rendered {count} images at {args.size}px in {elapsed:.1f}s "
          f"({count / elapsed:.0f} images/s, one core)")
    return train, test


def time_tfds_generation(args):
    import tempfile
    from trainer.data import synthetic_faces

    with tempfile.TemporaryDirectory() as data_dir:
        start = time.perf_counter()
        synthetic_faces.load_synthetic_faces(
            data_dir, image_size=args.size, train_identities=args.train_identities,
            images_per_identity=args.images_per_identity,
            test_identities=args.test_identities,
            test_images_per_identity=args.test_images_per_identity, seed=args.seed)
        print(f"TFDS download_and_prepare: {time.perf_counter() - start:.1f}s")


def main(argv=None):
    args = parse_args(argv)
    import keras

    keras.utils.set_random_seed(args.seed)
    if args.via_tfds:
        time_tfds_generation(args)
    train, test = render_data(args)
    pairs = sample_pairs(test.labels, args.pairs, seed=args.seed)

    raw = test.images.reshape(len(test.images), -1).astype(np.float32) / 127.5 - 1.0
    print(f"raw pixels: {verification_accuracy(raw, pairs):.4f}")

    embedder = build_embedding_model(args.size, args.width, args.convs_per_block)
    print(f"model parameters: {embedder.count_params():,}")

    def evaluate():
        embeddings = embedder.predict(test.images, batch_size=256, verbose=0)
        return verification_accuracy(embeddings, pairs)

    print(f"untrained CNN: {evaluate():.4f}")

    classifier = build_cosine_classifier(embedder, args.train_identities, args.scale,
                                         args.arcface_margin)
    steps = args.epochs * int(np.ceil(len(train.images) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        args.learning_rate, decay_steps=steps, warmup_target=None)
    classifier.compile(optimizer=keras.optimizers.Adam(schedule),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    training_seconds = 0.0
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        history = classifier.fit([train.images, train.labels], train.labels,
                                 batch_size=args.batch_size, epochs=1, shuffle=True,
                                 verbose=0)
        seconds = time.perf_counter() - start
        training_seconds += seconds
        print(f"epoch {epoch}: loss {history.history['loss'][-1]:.3f} "
              f"train acc {history.history['accuracy'][-1]:.3f} "
              f"verification {evaluate():.4f} "
              f"({len(train.images) / seconds:.0f} images/s, {training_seconds:.0f}s total)",
              flush=True)


if __name__ == "__main__":
    main()
