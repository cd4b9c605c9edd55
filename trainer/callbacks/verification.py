"""Verification on ``.bin`` sets during training, with the best model kept.

Every ``every_steps`` optimizer steps (and once at the end of training) the
loop's embedding model is evaluated on each ``.bin`` file (LFW protocol, see
``trainer.evaluation.verification``). Results go to the console,
``<run>/verification.json``, TensorBoard (``<run>/tensorboard/verification``)
and wandb when a run is active. When the monitored accuracy improves, the
exportable embedding model is saved to ``<run>/best/embedding.keras`` with
``best.json`` beside it (written atomically).
"""

from __future__ import annotations

import os

import numpy as np

from trainer.callbacks.base import EveryNSteps
from trainer.io import read_json, save_file, write_json
from trainer.records import ScalarWriter
from trainer.registry import CALLBACKS, ConfigError, to_plain

MEAN = "mean"


@CALLBACKS.register("verification")
class VerificationCallback(EveryNSteps):
    """Evaluate ``bin_files`` (default: ``eval.bin_files``) every ``every_steps`` steps."""

    def __init__(self, run_dir, config=None, bin_files=None, every_steps: int = 1000, monitor: str = MEAN,
                 keep_best: bool = True, folds: int = 10, batch_size: int = 256):
        super().__init__()
        if bin_files is None and config is not None:
            bin_files = to_plain((config.get("eval") or {}).get("bin_files")) or []
        self.bin_files = [str(p) for p in (bin_files or [])]
        self.every_steps = int(every_steps)
        if self.every_steps < 0:
            raise ConfigError(f"callbacks.verification.every_steps={every_steps} must be >= 0 (0: only at the end)")
        self.monitor = monitor
        self.keep_best = bool(keep_best)
        self.folds, self.batch_size = int(folds), int(batch_size)
        self.run_dir = str(run_dir)
        self.history_path = os.path.join(self.run_dir, "verification.json")
        self.best_path = os.path.join(self.run_dir, "best", "embedding.keras")
        self.history = read_json(self.history_path, []) or []  # a resumed run keeps its past
        best = read_json(os.path.join(self.run_dir, "best", "best.json"))
        self.best = best["score"] if best else -np.inf
        self._sets = None
        self._last_step = None
        self._scalars = ScalarWriter(os.path.join(self.run_dir, "tensorboard", "verification"))
        names = [_name(p) for p in self.bin_files]
        if monitor != MEAN and monitor not in names:
            raise ConfigError(f"callbacks.verification.monitor={monitor!r} is not 'mean' or one of "
                              f"the .bin names: {', '.join(names) or '(no bin_files)'}")

    # -- keras hooks ---------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        from trainer.evaluation.verification import read_bin

        size = self.model.embedding_model.input_shape[1]
        # Decoded once: the images are the same at every evaluation.
        self._sets = {_name(p): read_bin(p, size) for p in self.bin_files}

    def should_evaluate(self) -> bool:
        return bool(self._sets)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self._scalars.close()

    # -- work ----------------------------------------------------------------------------
    def evaluate(self, step: int) -> dict:
        from trainer.evaluation.verification import (embed_with_norm, squared_distances,
                                                     verification_metrics)

        self._last_step = step
        results = {}
        for name, (images, issame) in self._sets.items():
            embeddings, xnorm = embed_with_norm(self.model.embedding_model, images, self.batch_size)
            distances = squared_distances(embeddings[0::2], embeddings[1::2])
            results[name] = verification_metrics(distances, issame, self.folds, xnorm)
            # As arcface_torch logs each target: accuracy, XNorm and the highest accuracy so far.
            highest = max([results[name]["accuracy"]] + [h["results"][name]["accuracy"] for h in self.history
                                                         if h["step"] < step and name in h["results"]])
            print(f"step {step} verification ({name}): accuracy {results[name]['accuracy']:.4f} "
                  f"± {results[name]['accuracy_std']:.4f}, XNorm {xnorm:.2f}, highest {highest:.4f}", flush=True)
        score = (float(np.mean([r["accuracy"] for r in results.values()])) if self.monitor == MEAN
                 else results[self.monitor]["accuracy"])
        self.history = [h for h in self.history if h["step"] < step]
        self.history.append({"step": step, "score": score, "results": results})
        write_json(self.history_path, self.history)
        self._log(step, results)
        if self.keep_best and score > self.best:
            self.best = score
            self._save_best(step, score, results)
        return results

    def _save_best(self, step: int, score: float, results: dict) -> None:
        from trainer.export.model_files import exportable

        save_file(self.best_path, exportable(self.model.embedding_model).save)
        write_json(os.path.join(os.path.dirname(self.best_path), "best.json"),
                   {"step": step, "score": score, "monitor": self.monitor, "results": results})

    def _log(self, step: int, results: dict) -> None:
        scalars = {}
        for name, metrics in results.items():
            scalars[f"verification/{name}/accuracy"] = metrics["accuracy"]
            scalars[f"verification/{name}/roc_auc"] = metrics["roc_auc"]
            scalars[f"verification/{name}/xnorm"] = metrics["xnorm"]
            for far, tar in metrics["tar_at_far"].items():
                if tar is not None:
                    scalars[f"verification/{name}/tar_at_far_{far}"] = tar
        self._scalars.write(scalars, step, **{"verification/step": step})


def _name(path: str) -> str:
    from trainer.evaluation.verification import bin_name

    return bin_name(path)
