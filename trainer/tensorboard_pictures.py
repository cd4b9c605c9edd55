"""TensorBoard beyond scalars: the final ROC and score histograms as images, an embedding
projector of held-out faces with thumbnails, and a sweep trial's hyperparameters.

All of it goes into the run's ``tensorboard/`` folder (TensorFlow backend only), as
``logger.pictures`` asks; the runner calls ``callbacks`` when the run is assembled and
``write_final`` after the final evaluation:

* ``steps/`` and ``heldout/``: the step curves and the per-epoch held-out accuracy
  (``trainer.callbacks.step_scalars``, ``trainer.callbacks.heldout_accuracy``);
* ``evaluation/``: images ``final/heldout_roc`` and ``final/heldout_scores`` (the held-out
  pairs of the final evaluation, same count and seed), beside the final scalars;
* ``evaluation/projector_config.pbtxt`` with ``projector/tensor.tsv`` (embeddings),
  ``metadata.tsv`` (identity per face) and ``sprite.png`` (thumbnails): TensorBoard's
  projector plugin reads a ``projector_config.pbtxt`` in a run folder;
* ``tensorboard/`` itself: the ``hp.hparams`` summary of a multirun job (the overrides
  Hydra gave it, an Optuna trial's parameters among them), for the HParams dashboard.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

PROJECTOR = "projector"
THUMBNAIL = 48  # pixels: larger faces are shrunk for the sprite (at most 8192 px a side)


def options(cfg) -> dict:
    """``logger.pictures`` with its defaults (a logger config without the node gets none)."""
    node = (cfg.get("logger") or {}).get("pictures") or {}
    return {"step_every": int(node.get("step_every", 0) or 0),
            "heldout_every_epochs": int(node.get("heldout_every_epochs", 0) or 0),
            "heldout_pairs": int(node.get("heldout_pairs", 150)),
            "roc": bool(node.get("roc", False)),
            "projector_faces": int(node.get("projector_faces", 0) or 0),
            "hparams": bool(node.get("hparams", False))}


def callbacks(cfg, tensorboard_dir: str | None, heldout) -> list:
    """The training-time pictures (and a multirun job's hparams, written now); none without TensorBoard.

    ``heldout`` is a callable returning the run's held-out ``(images, labels)`` or None.
    """
    if tensorboard_dir is None:
        return []
    from trainer.callbacks.heldout_accuracy import HeldoutAccuracy
    from trainer.callbacks.step_scalars import StepScalars

    o = options(cfg)
    if o["hparams"]:
        values = sweep_hparams()
        if values:
            from hydra.core.hydra_config import HydraConfig

            write_hparams(tensorboard_dir, values, trial=str(HydraConfig.get().job.num))
    made = []
    if o["step_every"] > 0:
        made.append(StepScalars(os.path.join(tensorboard_dir, "steps"), o["step_every"]))
    if o["heldout_every_epochs"] > 0 and cfg.get("eval") is not None:
        made.append(HeldoutAccuracy(os.path.join(tensorboard_dir, "heldout"), heldout, o["heldout_pairs"],
                                    int(cfg.eval.get("seed", 0)), o["heldout_every_epochs"],
                                    int(cfg.eval.get("folds", 10))))
    return made


def write_final(cfg, tensorboard_dir: str | None, model, heldout, step: int) -> None:
    """The final model's ROC, score histograms and projector, as ``logger.pictures`` asks."""
    o = options(cfg)
    if tensorboard_dir is None or not (o["roc"] or o["projector_faces"]):
        return
    arrays = heldout()
    if arrays is None or cfg.get("eval") is None:
        return
    write_final_pictures(os.path.join(tensorboard_dir, "evaluation"), model, arrays,
                         int(cfg.eval.get("pairs", 3000)), int(cfg.eval.get("seed", 0)), step,
                         projector_faces=o["projector_faces"], roc=o["roc"])


def write_final_pictures(folder: str, model, heldout, pairs: int, seed: int, step: int,
                         projector_faces: int = 256, roc: bool = True, batch_size: int = 256) -> None:
    """The final model's pictures of the held-out ``(images, labels)`` into ``folder``."""
    from trainer.evaluation.verification import ScoredPairs, embed, sample_pairs, squared_distances

    images, labels = heldout
    embeddings = embed(model, images, batch_size)
    if roc:
        try:
            first, second, issame = sample_pairs(labels, pairs, seed)
        except ValueError:  # too few held-out people for pairs
            first = None
        if first is not None:
            scored = ScoredPairs(squared_distances(embeddings[first], embeddings[second]), issame)
            write_images(folder, figures(scored), step)
    if projector_faces > 0:
        write_projector(folder, embeddings, images, labels, projector_faces, seed)


def figures(scored) -> dict:
    """{tag: PNG bytes} of the ROC and the score histograms of ``scored``."""
    from trainer.evaluation.score_plots import plot_score_histograms
    from trainer.evaluation.verification import plot_roc

    with tempfile.TemporaryDirectory() as scratch:
        roc = plot_roc({"heldout": scored.roc()}, os.path.join(scratch, "roc.png"))
        scores = plot_score_histograms({"heldout": scored}, os.path.join(scratch, "scores.png"))
        return {"final/heldout_roc": _read(roc), "final/heldout_scores": _read(scores)}


def write_images(folder: str, pngs: dict, step: int) -> None:
    import tensorflow as tf

    writer = tf.summary.create_file_writer(folder)
    with writer.as_default():
        for tag, png in pngs.items():
            tf.summary.image(tag, tf.image.decode_png(png, channels=4)[None], step=step)
    writer.close()


def write_projector(folder: str, embeddings: np.ndarray, images: np.ndarray, labels: np.ndarray,
                    count: int, seed: int) -> str:
    """Up to ``count`` held-out faces, spread over identities; returns the config's path."""
    chosen = spread_sample(np.asarray(labels), count, seed)
    target = os.path.join(folder, PROJECTOR)
    os.makedirs(target, exist_ok=True)
    np.savetxt(os.path.join(target, "tensor.tsv"), embeddings[chosen], delimiter="\t", fmt="%.6f")
    with open(os.path.join(target, "metadata.tsv"), "w", encoding="utf-8") as f:
        f.writelines(f"{int(label)}\n" for label in np.asarray(labels)[chosen])  # one column: no header
    side = sprite(images[chosen], os.path.join(target, "sprite.png"))
    config = (f'embeddings {{\n  tensor_name: "held-out faces"\n  tensor_path: "{PROJECTOR}/tensor.tsv"\n'
              f'  metadata_path: "{PROJECTOR}/metadata.tsv"\n  sprite {{\n'
              f'    image_path: "{PROJECTOR}/sprite.png"\n    single_image_dim: {side}\n'
              f'    single_image_dim: {side}\n  }}\n}}\n')
    path = os.path.join(folder, "projector_config.pbtxt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(config)
    return path


def spread_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Indices of ``count`` faces (all when fewer), round-robin over identities, seeded."""
    rng = np.random.default_rng(seed)
    groups = [rng.permutation(np.flatnonzero(labels == label)) for label in rng.permutation(np.unique(labels))]
    order = [group[i] for i in range(max((len(g) for g in groups), default=0)) for group in groups
             if i < len(group)]
    return np.asarray(order[:count], dtype=np.int64)


def sprite(images: np.ndarray, path: str) -> int:
    """A square grid of thumbnails, row by row in the tensor's order; returns a thumbnail's side."""
    from PIL import Image

    side = min(int(images.shape[1]), THUMBNAIL)
    columns = int(np.ceil(np.sqrt(len(images))))
    sheet = Image.new("RGB", (columns * side, columns * side))
    for index, image in enumerate(np.clip(images, 0, 255).astype(np.uint8)):
        thumbnail = Image.fromarray(image).resize((side, side), Image.BILINEAR)
        sheet.paste(thumbnail, ((index % columns) * side, (index // columns) * side))
    sheet.save(path)
    return side


def sweep_hparams() -> dict | None:
    """{override key: value} of a Hydra multirun job (a sweep's trial), or None outside one."""
    import yaml

    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
    except (ImportError, ValueError):  # not running under Hydra (the Python API)
        return None
    if hydra.mode != RunMode.MULTIRUN:
        return None
    values = {}
    for line in hydra.overrides.task:
        key, _, text = str(line).partition("=")
        key = key.lstrip("+~")
        if key.startswith("hydra.") or not key:
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        values[key] = value if isinstance(value, (bool, int, float, str)) else text
    return values


def write_hparams(folder: str, values: dict, trial: str) -> None:
    """The HParams dashboard's session: ``values`` for this trial (its metrics: the run's scalars)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(folder)
    with writer.as_default():
        hp.hparams(values, trial_id=trial)
    writer.close()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
