"""Retrieval metrics during training (precision@1, R-precision, MAP@R, recall@k).

Every ``every_steps`` optimizer steps (and once at the end of training) the
loop's embedding model embeds a labelled set, mirror-summed as in verification,
and ``trainer.evaluation.retrieval`` ranks it against itself (self-matches
excluded) or against a separate gallery. The set is an identity folder
(``folder``), or by default the held-out identities of the job's own data
source; ``gallery`` (identity folders, matched to the queries by name) makes
the references separate. Results go to the console, ``<run>/retrieval.json``,
TensorBoard (``<run>/tensorboard/retrieval``) and wandb when a run is active.
"""

from __future__ import annotations

import os

import numpy as np

from trainer.callbacks.base import EveryNSteps
from trainer.io import read_json, write_json
from trainer.records import ScalarWriter
from trainer.registry import CALLBACKS, ConfigError


@CALLBACKS.register("retrieval")
class RetrievalCallback(EveryNSteps):
    """Retrieval metrics of ``folder`` (default: the data's held-out identities) every N steps."""

    def __init__(self, run_dir, config=None, folder=None, gallery=None, every_steps: int = 1000,
                 ks=(1, 5, 10), batch_size: int = 256, max_elements: int = 1 << 24):
        super().__init__()
        self.every_steps = int(every_steps)
        if self.every_steps < 0:
            raise ConfigError(f"callbacks.retrieval.every_steps={every_steps} must be >= 0 (0: only at the end)")
        if gallery and not folder:
            raise ConfigError("callbacks.retrieval.gallery needs callbacks.retrieval.folder for the queries "
                              "(identities are matched by folder name)")
        self.folder, self.gallery = folder, gallery
        self.ks = tuple(int(k) for k in ks)
        self.batch_size, self.max_elements = int(batch_size), int(max_elements)
        self.config = config
        self.run_dir = str(run_dir)
        self.history_path = os.path.join(self.run_dir, "retrieval.json")
        self.history = read_json(self.history_path, []) or []  # a resumed run keeps its past
        self._sets = None
        self._last_step = None
        self._scalars = ScalarWriter(os.path.join(self.run_dir, "tensorboard", "retrieval"))

    # -- keras hooks ---------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # Read once: the images are the same at every evaluation.
        self._sets = self.load_sets(int(self.model.embedding_model.input_shape[1]))

    def should_evaluate(self) -> bool:
        return self._sets is not None

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self._scalars.close()

    # -- work ----------------------------------------------------------------------------
    def load_sets(self, size: int):
        """(query images, labels, gallery images or None, gallery labels or None)."""
        from trainer.evaluation.suite import identity_folder

        if not self.folder:
            return (*self._heldout(), None, None)
        names, images, labels = identity_folder(str(self.folder), size)
        if not self.gallery:
            return images, labels, None, None
        gallery_names, gallery_images, gallery_labels = identity_folder(str(self.gallery), size)
        index = {name: i for i, name in enumerate(names)}
        relabel = np.asarray([index.setdefault(name, len(index)) for name in gallery_names])
        return images, labels, gallery_images, relabel[gallery_labels]

    def _heldout(self):
        from trainer.data.pipeline import materialise
        from trainer.registry import DATASETS

        data = dict(self.config["data"]) if self.config is not None else None
        if not data:
            raise ConfigError("callbacks.retrieval: no folder given and no data config to take held-out "
                              "identities from; set callbacks.retrieval.folder=<identity folders>")
        # The job's data are already at the model's input size.
        heldout = DATASETS.build(data).heldout()
        if heldout is None:
            raise ConfigError(f"callbacks.retrieval: data={data.get('name')} has no held-out identities; "
                              "set callbacks.retrieval.folder=<identity folders>")
        return materialise(heldout)

    def evaluate(self, step: int) -> dict:
        from trainer.evaluation.retrieval import retrieval_metrics
        from trainer.evaluation.verification import embed

        self._last_step = step
        images, labels, gallery_images, gallery_labels = self._sets
        model = self.model.embedding_model
        embeddings = embed(model, images, self.batch_size)
        gallery = None if gallery_images is None else embed(model, gallery_images, self.batch_size)
        result = retrieval_metrics(embeddings, labels, gallery, gallery_labels, self.ks, self.max_elements)
        print(f"step {step} retrieval: precision@1 {result['precision_at_1']:.4f}, R-precision "
              f"{result['r_precision']:.4f}, MAP@R {result['map_at_r']:.4f} ({result['queries']} queries)",
              flush=True)
        self.history = [h for h in self.history if h["step"] < step]
        self.history.append({"step": step, "results": result})
        write_json(self.history_path, self.history)
        self._log(step, result)
        return result

    def _log(self, step: int, result: dict) -> None:
        scalars = {f"retrieval/{key}": result[key] for key in ("precision_at_1", "r_precision", "map_at_r")}
        scalars.update({f"retrieval/recall_at_{k}": value for k, value in result["recall_at_k"].items()})
        scalars = {key: value for key, value in scalars.items() if np.isfinite(value)}
        self._scalars.write(scalars, step, **{"retrieval/step": step})
