"""Face verification, LFW protocol: flip-summed embeddings, 10-fold threshold accuracy.

Pairs are scored by the squared Euclidean distance between L2-normalised
embeddings (0 … 4); for each fold the best threshold on the other nine folds
(0.00, 0.01, … 3.99) is applied to it, and the mean ± std over folds is reported.
Also reported: TAR at FAR 1e-1 … 1e-4 (a FAR below one false accept among the
negatives is not measurable and is reported as null), ROC AUC, and XNorm, the
mean L2 norm of the un-normalised embeddings (of images and their mirrors).

``.bin`` sets (LFW, CFP-FP, AgeDB-30, ...) are pickles of (2·P encoded images,
P booleans): pair i is images 2i and 2i+1.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass

import numpy as np

from trainer.data.errors import DataError
from trainer.errors import first_line
from trainer.normalize import l2_normalize_numpy
from trainer.registry import EVALUATORS

THRESHOLDS = np.arange(0.0, 4.0, 0.01)
FARS = (1e-1, 1e-2, 1e-3, 1e-4)


@dataclass(frozen=True)
class ScoredPairs:
    """Scored pairs, what the pictures are drawn from: squared distances and whether each pair is one person."""

    distances: np.ndarray
    issame: np.ndarray

    def roc(self):
        """(FAR, TAR), as ``roc_curve``."""
        return roc_curve(self.distances, self.issame)

    def cosines(self) -> np.ndarray:
        """The pairs' cosine similarities (the embeddings are unit vectors: d² = 2 - 2 cos)."""
        return 1.0 - np.asarray(self.distances, np.float64) / 2.0


def embed(model, images: np.ndarray, batch_size: int = 256, flip: bool = True) -> np.ndarray:
    """L2-normalised embeddings; with ``flip`` the image's and its mirror's are summed first."""
    return embed_with_norm(model, images, batch_size, flip)[0]


def embed_with_norm(model, images: np.ndarray, batch_size: int = 256, flip: bool = True):
    """(L2-normalised flip-summed embeddings, XNorm: mean norm of the un-normalised outputs)."""
    features = _predict(model, images, batch_size)
    norms = [np.linalg.norm(features, axis=1)]
    if flip:
        mirrored = _predict(model, images[:, :, ::-1], batch_size)
        norms.append(np.linalg.norm(mirrored, axis=1))
        features = features + mirrored
    xnorm = float(np.mean(np.concatenate(norms))) if len(features) else float("nan")
    return l2_normalize_numpy(features, axis=1), xnorm


def unnormalised(model):
    """An exported model (… → unit normalisation) without that last layer, so XNorm means something.

    Verification normalises anyway, so accuracies are unchanged.
    """
    last = model.layers[-1] if getattr(model, "layers", None) else None
    if last is not None and (type(last).__name__ in ("L2Normalize", "UnitNormalization")
                             or last.name == "l2_normalize"):
        import keras

        return keras.Model(model.inputs, last.input, name=f"{model.name}_unnormalised")
    return model


def _predict(model, images, batch_size):
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], np.float32)
        outputs.append(np.asarray(model(batch, training=False), np.float64))
    return np.concatenate(outputs) if outputs else np.zeros((0, 1))


def sample_pairs(labels: np.ndarray, num_pairs: int, seed: int = 0):
    """Distinct positive and as many distinct negative index pairs (seeded), plus ``issame``.

    Positives are two different images of one identity, negatives two images of
    two different identities; every pair (either order) is drawn at most once,
    uniformly among all such pairs. When the images hold fewer distinct pairs of
    either kind than ``num_pairs``, all that there are (of the scarcer kind, and
    as many of the other) are used: ``pair_counts`` says how many.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    available = available_pairs(labels)
    if available["positive_pairs"] < 1 or available["negative_pairs"] < 1:
        raise PairsError(f"verification needs at least two identities, one of them with two images; these "
                         f"images hold {len(np.unique(labels))} identities")
    count = min(int(num_pairs), available["positive_pairs"], available["negative_pairs"])
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    positives = _distinct_pairs(rng, count, available["positive_pairs"],
                                lambda n: _draw_positives(rng, groups, n), lambda: _all_positives(groups))
    negatives = _distinct_pairs(rng, count, available["negative_pairs"],
                                lambda n: _draw_negatives(rng, labels, n), lambda: _all_negatives(groups))
    # Interleaved (positive, negative, ...) so every contiguous fold holds both kinds.
    pairs = np.stack([positives, negatives], axis=1).reshape(-1, 2)
    issame = np.tile([True, False], count)
    return pairs[:, 0], pairs[:, 1], issame


def available_pairs(labels: np.ndarray) -> dict:
    """Identities, images, and how many distinct positive and negative pairs they hold."""
    sizes = np.unique(np.asarray(labels), return_counts=True)[1].astype(np.int64)
    images = int(sizes.sum())
    positives = int(np.sum(sizes * (sizes - 1) // 2))
    return {"identities": int(len(sizes)), "images": images, "positive_pairs": positives,
            "negative_pairs": int(images * (images - 1) // 2 - positives)}


def pair_counts(labels: np.ndarray, issame: np.ndarray, requested: int) -> dict:
    """What a held-out score stands on: identities, images, distinct pairs used and available.

    ``note`` says when fewer pairs than ``requested`` exist, so the number is read for what it is.
    """
    available = available_pairs(labels)
    issame = np.asarray(issame, bool)
    counts = {"identities": available["identities"], "images": available["images"],
              "positive_pairs": int(issame.sum()), "negative_pairs": int((~issame).sum()),
              "requested_pairs": int(requested), "available_positive_pairs": available["positive_pairs"],
              "available_negative_pairs": available["negative_pairs"]}
    if counts["positive_pairs"] < requested:
        scarce = "positive" if available["positive_pairs"] <= available["negative_pairs"] else "negative"
        counts["note"] = (f"{available['identities']} identities ({available['images']} images) hold only "
                          f"{counts['positive_pairs']} distinct {scarce} pairs, fewer than the "
                          f"{requested} asked for: all of them are used, each once, with as many of the "
                          f"other kind")
    return counts


def sample_text(metrics: dict) -> str:
    """``112 pairs (56 positive + 56 negative, distinct) from 2 identities, 16 images``."""
    if "identities" not in metrics:
        return f"{metrics.get('pairs', '?')} pairs"
    return (f"{metrics['pairs']} pairs ({metrics['positive_pairs']} positive + {metrics['negative_pairs']} "
            f"negative, each distinct) from {metrics['identities']} identities, {metrics['images']} images")


def _distinct_pairs(rng, count: int, total: int, draw, enumerate_all) -> np.ndarray:
    """(count, 2) distinct pairs (smaller index first) of ``total`` possible ones, in random order."""
    if count * 2 >= total:  # a large share of all pairs: choose among them all
        candidates = enumerate_all()
        return candidates[rng.choice(len(candidates), size=count, replace=False)]
    chosen, seen = [], set()
    while len(chosen) < count:  # rejection of repeats stays cheap below half of all pairs
        for a, b in draw(2 * (count - len(chosen))).tolist():
            if (a, b) not in seen and len(chosen) < count:
                seen.add((a, b))
                chosen.append((a, b))
    return np.asarray(chosen, np.int64).reshape(-1, 2)


def _ordered(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)


def _draw_positives(rng, groups, n: int) -> np.ndarray:
    """``n`` positive pairs, each uniform among all positive pairs (repeats possible)."""
    sizes = np.asarray([len(g) for g in groups], np.int64)
    weights = (sizes * (sizes - 1) / 2).astype(np.float64)
    identity = rng.choice(len(groups), size=n, p=weights / weights.sum())
    size = np.maximum(sizes[identity], 2)  # identities of one image have weight 0: never drawn
    first = rng.integers(0, size)
    second = (first + rng.integers(1, size)) % size  # any other member
    return _ordered(np.asarray([groups[i][j] for i, j in zip(identity, first)], np.int64),
                    np.asarray([groups[i][j] for i, j in zip(identity, second)], np.int64))


def _draw_negatives(rng, labels: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` negative pairs, uniform among all negative pairs (repeats possible)."""
    a, b = rng.integers(0, len(labels), size=(2, n))
    keep = labels[a] != labels[b]
    return _ordered(a[keep], b[keep])


def _all_positives(groups) -> np.ndarray:
    pairs = [np.stack([g[i], g[j]], axis=1) for g in groups for i, j in [np.triu_indices(len(g), 1)]]
    return np.concatenate(pairs).astype(np.int64)


def _all_negatives(groups) -> np.ndarray:
    pairs = []
    for number, group in enumerate(groups):
        later = np.concatenate(groups[number + 1:]) if number + 1 < len(groups) else np.zeros(0, np.int64)
        a, b = np.meshgrid(group, later, indexing="ij")
        pairs.append(_ordered(a.reshape(-1), b.reshape(-1)))
    return np.concatenate(pairs).astype(np.int64)


def heldout_verification(model, images: np.ndarray, labels: np.ndarray, pairs: int, seed: int, folds: int,
                         batch_size: int = 256, with_scores: bool = False):
    """Verification metrics of ``model`` on seeded distinct pairs of ``images``, with what they stand on.

    The one computation behind the run's held-out accuracy, ``trainer.evaluate folder=``
    and the export parity report's Keras reference, so the three agree.
    """
    embeddings, xnorm = embed_with_norm(unnormalised(model), images, batch_size)
    index_a, index_b, issame = sample_pairs(labels, pairs, seed)
    distances = squared_distances(embeddings[index_a], embeddings[index_b])
    metrics = {**verification_metrics(distances, issame, folds, xnorm), **pair_counts(labels, issame, pairs)}
    return (metrics, ScoredPairs(distances, issame)) if with_scores else metrics


def squared_distances(embeddings_a: np.ndarray, embeddings_b: np.ndarray) -> np.ndarray:
    return np.sum(np.square(embeddings_a - embeddings_b), axis=1)


class PairsError(DataError):
    """The scored pairs cannot give a k-fold accuracy (too few, or a fold with one kind only)."""


def fold_indices(count: int, folds: int):
    """Contiguous folds as in the LFW protocol (pairs are not shuffled first)."""
    return np.array_split(np.arange(count), folds)


def check_folds(issame: np.ndarray, folds: int) -> None:
    """Raise ``PairsError`` unless every fold holds a positive and a negative pair.

    Otherwise a fold is empty (``array_split`` with fewer pairs than folds: its
    accuracy is the mean of nothing, NaN) or its threshold is chosen on, or
    scored against, one kind of pair only, and the mean accuracy means little.
    """
    count = len(issame)
    if folds < 2:
        raise PairsError(f"verification needs at least 2 folds (the threshold is chosen on the others), got {folds}")
    if count < 2 * folds:
        raise PairsError(
            f"verification got {count} pairs for {folds} folds; each fold needs a positive and a negative "
            f"pair, so use at least {2 * folds} pairs or fewer folds")
    for number, test in enumerate(fold_indices(count, folds)):
        positives = int(np.sum(issame[test]))
        if positives == 0 or positives == len(test):
            kind = "negative" if positives == 0 else "positive"
            raise PairsError(
                f"verification fold {number + 1} of {folds} (pairs {test[0]}-{test[-1]}) holds only {kind} "
                f"pairs; folds are contiguous, so interleave or shuffle positives and negatives")


def ten_fold_accuracy(distances: np.ndarray, issame: np.ndarray, folds: int = 10,
                      thresholds: np.ndarray = THRESHOLDS):
    """(mean accuracy, std, best threshold per fold)."""
    distances = np.asarray(distances, np.float64)
    issame = np.asarray(issame, bool)
    check_folds(issame, folds)
    # accuracy[t, i]: is pair i classified right at threshold t (computed once, vectorised).
    correct = (distances[None, :] < thresholds[:, None]) == issame[None, :]
    accuracies, best = [], []
    for test in fold_indices(len(issame), folds):
        train = np.ones(len(issame), bool)
        train[test] = False
        threshold_index = int(np.argmax(correct[:, train].mean(axis=1)))
        best.append(float(thresholds[threshold_index]))
        accuracies.append(float(correct[threshold_index, test].mean()))
    return float(np.mean(accuracies)), float(np.std(accuracies)), best


def tar_at_far(distances: np.ndarray, issame: np.ndarray, fars=FARS) -> dict:
    """``{"1e-03": TAR}``: positives accepted at the threshold that accepts at most FAR of negatives.

    A pair is accepted when its distance is below the threshold (as in the
    10-fold protocol). With N negatives, at most floor(FAR·N) may be accepted;
    when that is 0 the FAR is below the set's resolution and the value is None.
    """
    distances = np.asarray(distances, np.float64)
    issame = np.asarray(issame, bool)
    negatives = np.sort(distances[~issame])
    positives = distances[issame]
    result = {}
    for far in fars:
        allowed = int(np.floor(far * len(negatives) + 1e-9))
        if allowed < 1 or not len(positives):
            result[f"{far:.0e}"] = None
            continue
        # Accepting d < negatives[allowed] admits at most `allowed` negatives (fewer on ties).
        threshold = negatives[allowed] if allowed < len(negatives) else np.inf
        result[f"{far:.0e}"] = float(np.mean(positives < threshold))
    return result


def roc_auc(distances: np.ndarray, issame: np.ndarray) -> float:
    """Area under the ROC curve: P(positive distance < negative distance), ties counting half."""
    distances = np.asarray(distances, np.float64)
    issame = np.asarray(issame, bool)
    positives, negatives = distances[issame], np.sort(distances[~issame])
    if not len(positives) or not len(negatives):
        return float("nan")
    below = np.searchsorted(negatives, positives, side="left")       # negatives closer than it
    not_above = np.searchsorted(negatives, positives, side="right")  # ... closer or as close
    # For each positive: negatives farther away count 1, equally far count 1/2.
    wins = (len(negatives) - not_above) + 0.5 * (not_above - below)
    return float(np.sum(wins) / (len(positives) * len(negatives)))


def roc_curve(distances: np.ndarray, issame: np.ndarray):
    """(FAR, TAR) at every distinct threshold, FAR ascending (accept distance <= threshold)."""
    distances = np.asarray(distances, np.float64)
    issame = np.asarray(issame, bool)
    order = np.argsort(distances, kind="stable")
    sorted_distances, sorted_same = distances[order], issame[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(sorted_distances)), len(distances) - 1]
    true_accepts = np.cumsum(sorted_same)[last_of_each]
    false_accepts = np.cumsum(~sorted_same)[last_of_each]
    far = np.r_[0.0, false_accepts / max(np.sum(~issame), 1)]
    tar = np.r_[0.0, true_accepts / max(np.sum(issame), 1)]
    return far, tar


def plot_roc(curves: dict, path: str, min_far: float = 1e-4) -> str:
    """Write a ROC PNG of ``{name: (far, tar)}`` (log FAR axis from ``min_far``); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 4), dpi=100)
    for name, (far, tar) in curves.items():
        keep = far > 0
        axes.plot(far[keep], tar[keep], label=name)
    axes.set_xscale("log")
    axes.set_xlim(min_far, 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate")
    axes.set_ylabel("true accept rate")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def verification_metrics(distances: np.ndarray, issame: np.ndarray, folds: int = 10,
                         xnorm: float | None = None) -> dict:
    """Everything the protocol reports for one set of scored pairs."""
    mean, std, thresholds = ten_fold_accuracy(distances, issame, folds)
    metrics = {"accuracy": mean, "accuracy_std": std, "threshold": float(np.median(thresholds)),
               "pairs": int(len(issame)), "tar_at_far": tar_at_far(distances, issame),
               "roc_auc": roc_auc(distances, issame)}
    if xnorm is not None:
        metrics["xnorm"] = float(xnorm)
    return metrics


# -- .bin files ----------------------------------------------------------------------

def _as_bytes(entry) -> bytes:
    if isinstance(entry, (bytes, bytearray)):
        return bytes(entry)
    if isinstance(entry, np.ndarray):
        return entry.astype(np.uint8, copy=False).tobytes()
    raise ValueError(f"a .bin entry is a {type(entry).__name__}, expected bytes, bytearray or uint8 array")


def decode_images(encoded, image_size: int | None = None) -> np.ndarray:
    """uint8 (N, S, S, 3) from encoded JPEG/PNG bytes; resized (area) when ``image_size`` differs."""
    import tensorflow as tf

    images = []
    for entry in encoded:
        image = tf.io.decode_image(_as_bytes(entry), channels=3, expand_animations=False)
        if image_size is not None and tuple(image.shape[:2]) != (image_size, image_size):
            image = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
                image, [image_size, image_size], method="area")), 0, 255), tf.uint8)
        images.append(image.numpy())
    return np.stack(images) if images else np.zeros((0, image_size or 1, image_size or 1, 3), np.uint8)


class BinUnpickler(pickle.Unpickler):
    """Unpickles only what a verification ``.bin`` holds: bytes, lists, booleans, NumPy arrays.

    A ``.bin`` is a pickle, and a pickle can name any function to call while it
    loads; this refuses every global outside that short list, so a hostile file
    is an error, not code run on the evaluating machine.
    """

    ALLOWED = {("_codecs", "encode"), ("builtins", "bytes"), ("builtins", "bytearray"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy", "bool_"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    class Refused(pickle.UnpicklingError):
        """A global outside ``ALLOWED``: told apart from pickle's own errors on foreign files."""

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise self.Refused(f"refused to load {module}.{name}: a verification .bin holds "
                                         "only images (bytes) and booleans")
        return super().find_class(module, name)


def read_bin(path: str, image_size: int | None = None):
    """(images uint8 [2P, S, S, 3], issame bool [P]) of a verification ``.bin`` (local or gs://)."""
    import tensorflow as tf

    from trainer.data.errors import DataError

    if not tf.io.gfile.exists(str(path)):
        raise DataError(f"verification file {path} does not exist; check eval.bin_files")
    with tf.io.gfile.GFile(str(path), "rb") as f:
        # Whole, then unpickled from memory: a corrupt length field makes pickle ask for gigabytes,
        # which TensorFlow's GFile.read(n) answers with a segmentation fault; BytesIO returns what
        # there is, and pickle then refuses the truncated record. (The unpickled images are the
        # file's size in memory anyway.)
        data = f.read()
    try:
        bins, issame = BinUnpickler(io.BytesIO(data), encoding="bytes").load()
    except BinUnpickler.Refused as error:
        raise DataError(f"{path}: {error}") from None
    except Exception as error:  # pickle raises many types on foreign files
        raise DataError(f"{path} is not a verification .bin (pickle of images and issame): "
                        f"{type(error).__name__}") from None
    del data
    issame = np.asarray(issame)
    if issame.ndim != 1 or not isinstance(bins, (list, tuple, np.ndarray)):
        raise DataError(f"{path} is not a verification .bin: it must hold a list of images and a list of "
                        f"issame flags, one per pair (its issame has shape {issame.shape})")
    issame = issame.astype(bool)
    if len(bins) != 2 * len(issame):
        raise DataError(f"{path} holds {len(bins)} images for {len(issame)} pairs (expected 2 per pair)")
    try:
        return decode_images(bins, image_size), issame
    except (tf.errors.OpError, TypeError, ValueError) as error:
        raise DataError(f"{path}: an image in it cannot be decoded ({first_line(error)}); "
                        "a verification .bin holds JPEG or PNG images") from None


def encode_image(image: np.ndarray, image_format: str = "png", quality: int = 95) -> bytes:
    import tensorflow as tf

    if image_format == "png":
        return tf.io.encode_png(image).numpy()
    return tf.io.encode_jpeg(image, quality=quality).numpy()


def write_bin(path: str, images_a: np.ndarray, images_b: np.ndarray, issame,
              image_format: str = "png") -> str:
    """Write pairs ``(images_a[i], images_b[i])`` as a ``.bin`` (pickle of bytes and booleans)."""
    import tensorflow as tf

    bins = []
    for a, b in zip(images_a, images_b):
        bins += [encode_image(a, image_format), encode_image(b, image_format)]
    buffer = io.BytesIO()
    pickle.dump((bins, [bool(x) for x in issame]), buffer, protocol=pickle.HIGHEST_PROTOCOL)
    folder = os.path.dirname(str(path))
    if folder:
        tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(str(path), "wb") as f:
        f.write(buffer.getvalue())
    return str(path)


def evaluate_bin(model, path: str, folds: int = 10, batch_size: int = 256, with_scores: bool = False):
    """Metrics of ``model`` on one ``.bin`` (images resized to the model's input)."""
    size = model.input_shape[1] if getattr(model, "input_shape", None) else None
    images, issame = read_bin(path, size)
    embeddings, xnorm = embed_with_norm(unnormalised(model), images, batch_size)
    distances = squared_distances(embeddings[0::2], embeddings[1::2])
    try:
        metrics = verification_metrics(distances, issame, folds, xnorm)
    except PairsError as error:  # the set is the user's to fix: say which one
        raise PairsError(f"{path}: {error}") from None
    return (metrics, ScoredPairs(distances, issame)) if with_scores else metrics


def bin_name(path: str) -> str:
    return os.path.splitext(os.path.basename(str(path)))[0]


def untrained_setting(value):
    """``eval.untrained``: true, false or auto (whether the runner evaluates the untrained model)."""
    text = str(value).strip().lower()
    if text in ("auto", "true", "false"):
        return text
    from trainer.registry import ConfigError

    raise ConfigError(f"eval.untrained={value!r} is not true, false or auto (auto: only short jobs on small "
                      "held-out sets evaluate their untrained model)")


@EVALUATORS.register("verification")
class VerificationEvaluator:
    """Held-out identities of the data source, sampled into positive/negative pairs."""

    def __init__(self, pairs: int = 3000, folds: int = 10, seed: int = 0, batch_size: int = 256,
                 bin_files=(), untrained="auto"):
        self.untrained = untrained_setting(untrained)  # the runner reads it (trainer.timings)
        self.pairs = int(pairs)
        self.folds = int(folds)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.bin_files = list(bin_files or [])
        # Interleaved pairs in contiguous folds: every fold holds both kinds iff it
        # holds at least two pairs, i.e. pairs >= folds. Say so before any training.
        if self.folds >= 2 and self.pairs < self.folds:
            raise PairsError(
                f"eval.pairs={self.pairs} gives {2 * self.pairs} pairs for eval.folds={self.folds}; each fold "
                f"needs a positive and a negative pair: set eval.pairs to at least {self.folds}")

    def evaluate(self, embedding_model, source) -> dict:
        from trainer.data.pipeline import materialise

        results = {}
        heldout = source.heldout()
        if heldout is not None:
            images, labels = materialise(heldout)
            results["heldout"] = heldout_verification(embedding_model, images, labels, self.pairs, self.seed,
                                                      self.folds, self.batch_size)
        for path in self.bin_files:
            results[bin_name(path)] = evaluate_bin(embedding_model, path, self.folds, self.batch_size)
        return results
