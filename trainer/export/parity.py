"""Parity of every export with the Keras model, measured in each format's own runtime.

On the data set's held-out images: the largest absolute difference and the
smallest cosine between the format's embedding and the Keras model's (per
image, no mirroring), held-out verification accuracy by the LFW protocol
(flip-summed embeddings, the same seeded pairs and folds as training's final
evaluation), CPU latency per image at batch 1 and 32, and the file's size.

The Keras reference's ``accuracy`` is the run's final held-out accuracy: the
same function (``verification.heldout_verification``) on the same pairs, which
sums each image's un-normalised embedding with its mirror's before normalising
(as insightface and ``trainer.evaluate`` do). A deployed format ends in the
normalisation, so its accuracy can only sum unit embeddings; it is compared
with the Keras model's accuracy computed that same way (``unit_output_accuracy``),
never with a number computed differently.

Tolerances (``TOLERANCES``): float32 formats keep the cosine >= 0.99999 and the
accuracy within 0.0005 (the same to 3 decimals); float16 weights keep the cosine
>= 0.9999; int8 loses at most 0.01 accuracy. A format that misses its tolerance,
or fails to convert or run, is reported ``failed`` with its numbers.
"""

from __future__ import annotations

import time

import numpy as np

from trainer.export import runtimes

MIN_COSINE = "min_cosine"
MAX_ACCURACY_DELTA = "max_accuracy_delta"  # |accuracy - Keras accuracy|
MAX_ACCURACY_DROP = "max_accuracy_drop"    # Keras accuracy - accuracy
FLOAT32 = {MIN_COSINE: 0.99999, MAX_ACCURACY_DELTA: 0.0005}
TOLERANCES = {
    "savedmodel": FLOAT32,
    "tflite_float32": FLOAT32,
    "onnx": FLOAT32,
    "tflite_float16": {MIN_COSINE: 0.9999},
    "tflite_int8": {MAX_ACCURACY_DROP: 0.01},
}
LATENCY_BATCHES = (1, 32)


def agreement(reference: np.ndarray, embeddings: np.ndarray) -> dict:
    """Max absolute difference and min cosine of per-image embeddings against the reference."""
    reference = np.asarray(reference, np.float64)
    embeddings = np.asarray(embeddings, np.float64)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(embeddings, axis=1)
    cosines = np.sum(reference * embeddings, axis=1) / np.maximum(norms, 1e-12)
    return {"max_abs_diff": float(np.max(np.abs(reference - embeddings))),
            "min_cosine": float(np.min(cosines)), "mean_cosine": float(np.mean(cosines))}


def keras_reference(model, images, labels, pairs: int, seed: int, folds: int, pair_spec) -> dict:
    """The Keras model's row: the run's held-out metrics, plus its accuracy from unit outputs."""
    from trainer.evaluation.verification import heldout_verification

    protocol = heldout_verification(model, images, labels, pairs, seed, folds)
    unit = heldout_accuracy(runtimes.KerasRunner(model), images, pair_spec)
    return {"runtime": "keras", "accuracy": protocol["accuracy"], "accuracy_std": protocol["accuracy_std"],
            "unit_output_accuracy": unit["accuracy"],
            **{k: protocol[k] for k in ("pairs", "positive_pairs", "negative_pairs", "identities", "images")}}


def heldout_accuracy(runner, images, pairs, batch_size: int = 256) -> dict:
    """10-fold accuracy of ``runner``'s unit outputs, flip-summed, on ``pairs`` (index_a, index_b, issame, folds)."""
    from trainer.evaluation import verification as v

    index_a, index_b, issame, folds = pairs
    embeddings = v.embed(runner, images, batch_size)
    distances = v.squared_distances(embeddings[index_a], embeddings[index_b])
    mean, std, _ = v.ten_fold_accuracy(distances, issame, folds)
    return {"accuracy": mean, "accuracy_std": std}


def latency(runner, images: np.ndarray, batches=LATENCY_BATCHES, budget_seconds: float = 2.0) -> dict:
    """Median milliseconds per image at each batch size (after two warm-up calls), on this CPU."""
    result = {}
    for batch in batches:
        chunk = np.resize(images, (batch, *images.shape[1:])).astype(images.dtype)
        for _ in range(2):
            runner.run(chunk)
        timings, started = [], time.perf_counter()
        while len(timings) < 5 or (time.perf_counter() - started < budget_seconds and len(timings) < 200):
            begin = time.perf_counter()
            runner.run(chunk)
            timings.append(time.perf_counter() - begin)
        result[f"batch_{batch}"] = 1000.0 * float(np.median(timings)) / batch
    return result


def judge(name: str, measured: dict, reference_accuracy: float) -> list[str]:
    """The tolerances ``name`` misses, each as a line with the numbers."""
    tolerance = TOLERANCES.get(name, {})
    failures = []
    cosine, accuracy = measured.get("min_cosine"), measured.get("accuracy")
    if MIN_COSINE in tolerance and not (cosine is not None and cosine >= tolerance[MIN_COSINE]):
        failures.append(f"min cosine {cosine:.7f} < {tolerance[MIN_COSINE]}")
    if MAX_ACCURACY_DELTA in tolerance:
        delta = abs(accuracy - reference_accuracy)
        if not delta <= tolerance[MAX_ACCURACY_DELTA]:
            failures.append(f"accuracy {accuracy:.4f} differs from Keras's {reference_accuracy:.4f} "
                            f"by {delta:.4f} > {tolerance[MAX_ACCURACY_DELTA]}")
    if MAX_ACCURACY_DROP in tolerance:
        drop = reference_accuracy - accuracy
        if not drop <= tolerance[MAX_ACCURACY_DROP]:
            failures.append(f"accuracy {accuracy:.4f} is {drop:.4f} below Keras's "
                            f"{reference_accuracy:.4f} (> {tolerance[MAX_ACCURACY_DROP]})")
    return failures


def measure(name: str, runner, images, reference_embeddings, reference_accuracy, pairs,
            with_latency: bool = True) -> dict:
    measured = {"runtime": runner.runtime}
    measured.update(agreement(reference_embeddings, _embed_plain(runner, images)))
    measured.update(heldout_accuracy(runner, images, pairs))
    measured["accuracy_delta"] = measured["accuracy"] - reference_accuracy
    if with_latency:
        measured["latency_ms_per_image"] = latency(runner, images)
    measured["tolerance"] = dict(TOLERANCES.get(name, {}))
    measured["failures"] = judge(name, measured, reference_accuracy)
    measured["passed"] = not measured["failures"]
    return measured


def _embed_plain(runner, images, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([runner.run(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def table(report: dict) -> str:
    """The report as a fixed-width text table (one line per format, the Keras model first)."""
    header = (f"{'format':<15} {'runtime':<24} {'size':>9} {'max |diff|':>10} {'min cosine':>10} "
              f"{'accuracy':>8} {'delta':>8} {'ms/img@1':>8} {'ms/img@32':>9}  status")
    lines = [header, "-" * len(header)]
    reference = report["reference"]
    lines.append(_row("keras", reference, reference))
    if "unit_output_accuracy" in reference:  # what the formats' delta is measured from
        lines.append(f"{'':<15} formats compare with Keras's accuracy from unit outputs, "
                     f"{reference['unit_output_accuracy']:.4f}")
    for name, row in report["formats"].items():
        lines.append(_row(name, row, reference))
    return "\n".join(lines)


def _row(name: str, row: dict, reference: dict) -> str:
    def number(key, spec):
        value = row.get(key)
        return format(value, spec) if isinstance(value, (int, float)) else "-"

    latency_ms = row.get("latency_ms_per_image", {})
    size = row.get("file_bytes")
    size_text = f"{size / 1e6:.2f} MB" if isinstance(size, int) else "-"
    if row is reference:
        status = "reference"
    elif "error" in row:
        status = f"FAILED: {row['error']}"
    else:
        status = "ok" if row.get("passed") else "FAILED: " + "; ".join(row.get("failures", []))
    delta = "-" if row is reference else number("accuracy_delta", "+.4f")
    b1, b32 = latency_ms.get("batch_1"), latency_ms.get("batch_32")
    return (f"{name:<15} {row.get('runtime', '-'):<24} {size_text:>9} {number('max_abs_diff', '.2e'):>10} "
            f"{number('min_cosine', '.7f'):>10} {number('accuracy', '.4f'):>8} {delta:>8} "
            f"{'-' if b1 is None else f'{b1:.3f}':>8} {'-' if b32 is None else f'{b32:.3f}':>9}  {status}")
