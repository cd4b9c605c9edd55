"""Stop at the first non-finite loss, saying at which step and where to restart from."""

from __future__ import annotations

import math

import keras

from trainer.callbacks.checkpoint import latest_checkpoint
from trainer.registry import CALLBACKS


class NonFiniteLoss(RuntimeError):
    """Training produced NaN/Inf; the message names the step, the loss and the last checkpoint."""


@CALLBACKS.register("nan_guard")
class NanGuard(keras.callbacks.Callback):
    def __init__(self, run_dir, config=None):
        super().__init__()
        self.run_dir = run_dir
        self.loss_name = str(config.loss.name) if config is not None and config.get("loss") else "loss"
        self.error: str | None = None

    def on_train_batch_end(self, batch, logs=None):
        value = (logs or {}).get("loss")
        if value is None or math.isfinite(float(value)):
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        latest = latest_checkpoint(self.run_dir)
        where = (f"last good checkpoint: {self.run_dir}/checkpoints/{latest['file']} (step {latest['step']})"
                 if latest else "no checkpoint was saved before it")
        self.error = (f"the {self.loss_name} loss became {value} at step {step}; {where}; "
                      "lower optimizer.lr, or use runtime.precision=float32")
        self.model.stop_training = True
