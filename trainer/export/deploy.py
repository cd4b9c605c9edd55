"""Write the requested formats of one embedding model and check each: ``parity.json``.

Used by ``python -m trainer.export`` and, through ``run.export_formats``, at the
end of training. The held-out images of the run's data set calibrate the int8
model and are what parity is measured on.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from trainer.export import check_available, resolve_formats
from trainer.export import formats as writers
from trainer.export import parity, runtimes
from trainer.registry import ConfigError

PARITY_FILE = "parity.json"


def export_and_check(model, export_dir: str, formats, images: np.ndarray, labels: np.ndarray,
                     pairs: int = 3000, seed: int = 0, folds: int = 10, calibration: int = 256,
                     with_latency: bool = True, source_path: str | None = None) -> dict:
    """Write ``formats`` of ``model`` (an exported embedding model) into ``export_dir``; measure them.

    Returns the report (also written to ``export_dir/parity.json``); a format
    that fails to convert or to run is in it with its ``error``.
    """
    from trainer.evaluation.verification import sample_pairs
    from trainer.registry import ConfigError

    names = resolve_formats(formats)
    check_available(names)
    if images is None or len(images) == 0:
        raise ConfigError("parity needs held-out images and the data set has none "
                          "(data.heldout_path=... or data.holdout=... adds them)")
    images = np.asarray(images)
    index_a, index_b, issame = sample_pairs(labels, int(pairs), int(seed))
    pair_spec = (index_a, index_b, issame, int(folds))
    rng = np.random.default_rng(seed)
    representative = images[np.sort(rng.permutation(len(images))[:int(calibration)])]

    reference_runner = runtimes.KerasRunner(model)
    reference_embeddings = parity._embed_plain(reference_runner, images)
    reference = parity.keras_reference(model, images, labels, int(pairs), int(seed), int(folds), pair_spec)
    if source_path and os.path.exists(source_path):
        reference["path"] = source_path
        reference["file_bytes"] = writers.size_on_disk(source_path)
    if with_latency:
        reference["latency_ms_per_image"] = parity.latency(reference_runner, images)

    remote = "://" in str(export_dir)
    work_dir = tempfile.mkdtemp(prefix="facetrain-export-") if remote else export_dir
    report = {"model_path": source_path, "heldout_images": int(len(images)),
              "pairs": int(len(issame)), "folds": int(folds), "seed": int(seed),
              "calibration_images": int(len(representative)), "reference": reference, "formats": {}}
    try:
        savedmodel = None
        for name in names:
            path = os.path.join(work_dir, writers.FILES[name])
            row = {"path": os.path.join(export_dir, writers.FILES[name])}
            try:
                savedmodel = _write(name, model, path, savedmodel, work_dir, representative)
                row["file_bytes"] = writers.size_on_disk(path)
                runner = runtimes.runner_for(name, path)
                # Formats end in the normalisation: judged against Keras's unit-output accuracy.
                row.update(parity.measure(name, runner, images, reference_embeddings,
                                          reference["unit_output_accuracy"], pair_spec, with_latency))
            except Exception as error:  # one format failing must not hide the others' numbers
                text = str(error).strip().splitlines()
                row.update(passed=False, error=f"{type(error).__name__}: {text[0] if text else ''}"[:300])
            report["formats"][name] = row
        report["passed"] = all(row.get("passed") for row in report["formats"].values())
        from trainer.io import write_json

        write_json(os.path.join(work_dir, PARITY_FILE), report)
        if remote:
            _upload(work_dir, export_dir)
    finally:
        if remote:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            _remove_scratch(work_dir)
    return report


def _write(name, model, path, savedmodel, work_dir, representative):
    """Write one format; returns the SavedModel folder that the TFLite variants convert from."""
    if name == "savedmodel":
        return writers.write_savedmodel(model, path)
    if name.startswith("tflite"):
        if savedmodel is None:  # TFLite alone: a SavedModel is still the converter's input
            savedmodel = writers.write_savedmodel(model, os.path.join(work_dir, ".savedmodel-for-tflite"))
        writers.write_tflite(savedmodel, name.split("_", 1)[1], path, representative)
        return savedmodel
    if name == "onnx":
        writers.write_onnx(model, path)
        return savedmodel
    raise ValueError(name)


def _remove_scratch(work_dir: str) -> None:
    shutil.rmtree(os.path.join(work_dir, ".savedmodel-for-tflite"), ignore_errors=True)


def _upload(local: str, remote: str) -> None:
    import tensorflow as tf

    for root, _, files in os.walk(local):
        if ".savedmodel-for-tflite" in root:
            continue
        relative = os.path.relpath(root, local)
        target = remote if relative == "." else f"{remote.rstrip('/')}/{relative}"
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(root, name), f"{target}/{name}", overwrite=True)


def export_formats(model, export_dir: str, formats, source, eval_node=None,
                   source_path: str | None = None, **options) -> dict:
    """Write ``formats`` of ``model`` into ``export_dir`` and check them on ``source``'s held-out images.

    What training calls for ``run.export_formats``; returns the parity report
    (``export_dir/parity.json``) and prints its table.
    """
    from trainer.data.pipeline import materialise
    from trainer.export.parity import table
    from trainer.export.deploy import export_and_check

    heldout = source.heldout()
    if heldout is None:
        why = getattr(source, "heldout_unavailable", None) or "the data set has no held-out identities"
        raise ConfigError(f"export formats need held-out images to check against: {why} "
                          "(data.heldout_path=... adds them)")
    images, labels = materialise(heldout)
    settings = _evaluation_settings(eval_node)
    settings.update({k: v for k, v in options.items() if v is not None})
    report = export_and_check(model, export_dir, formats, images, labels, source_path=source_path,
                              **settings)
    print(table(report), flush=True)
    return report


def _evaluation_settings(eval_node) -> dict:
    """Pairs, seed and folds of the run's held-out evaluation, so parity uses the same pairs."""
    node = dict(eval_node or {})
    return {"pairs": int(node.get("pairs", 3000)), "seed": int(node.get("seed", 0)),
            "folds": int(node.get("folds", 10))}
