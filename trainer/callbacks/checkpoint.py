"""Checkpoints of the whole training state, written atomically, and resume.

A checkpoint is one ``.weights.h5`` file holding the loop's variables (model,
head, stateful-loss state) and the optimizer's (its step counter included, so
the learning-rate schedule resumes where it was), plus ``latest.json`` naming
it with the epoch and global step. ``latest.json`` is replaced only after the
weights file is complete, so a crash never leaves it pointing at half a file.
"""

from __future__ import annotations

import glob
import os

import keras

from trainer.atomic import read_json, save_with, write_json
from trainer.registry import CALLBACKS

LATEST = "latest.json"


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def latest_checkpoint(run_dir: str) -> dict | None:
    """``{"file", "epoch", "step"}`` of the newest complete checkpoint, or None."""
    state = read_json(os.path.join(checkpoint_dir(run_dir), LATEST))
    if not state or not os.path.exists(os.path.join(checkpoint_dir(run_dir), state["file"])):
        return None
    return state


@CALLBACKS.register("checkpoint")
class Checkpoint(keras.callbacks.Callback):
    """Save at each epoch end (and every ``every_steps`` steps); restore on start."""

    def __init__(self, run_dir, every_steps: int = 0, keep: int = 2, config=None):
        super().__init__()
        self.folder = checkpoint_dir(run_dir)
        self.every_steps = int(every_steps or 0)
        self.keep = max(int(keep), 1)
        self.restore_from = latest_checkpoint(run_dir)
        self.epoch = 0

    @property
    def initial_epoch(self) -> int:
        return int(self.restore_from["epoch"]) if self.restore_from else 0

    def on_train_begin(self, logs=None):
        # fit() has built the model and optimizer by now, so every variable exists to load into.
        if self.restore_from:
            self.model.load_weights(os.path.join(self.folder, self.restore_from["file"]))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.every_steps and (batch + 1) % self.every_steps == 0:
            self.save(epoch=self.epoch, epoch_complete=False)

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch=epoch + 1, epoch_complete=True)

    def save(self, epoch: int, epoch_complete: bool) -> str:
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        name = f"ckpt-{step:09d}.weights.h5"
        save_with(os.path.join(self.folder, name), self.model.save_weights)
        write_json(os.path.join(self.folder, LATEST),
                   {"file": name, "epoch": epoch, "step": step, "epoch_complete": epoch_complete})
        self._prune(keep_name=name)
        return os.path.join(self.folder, name)

    def _prune(self, keep_name: str) -> None:
        files = sorted(glob.glob(os.path.join(self.folder, "ckpt-*.weights.h5")))
        for path in files[:-self.keep]:
            if os.path.basename(path) != keep_name:
                os.remove(path)
