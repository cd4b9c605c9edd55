"""The contract between the runner (``trainer.run``, ``trainer.bench``) and its callbacks.

A ``TrainerCallback`` is a Keras callback that also knows where in the run each
batch is (a resumed run starts ``fit`` part-way into an epoch), may wrap the
optimizer before compile, and may stop the run with a reason. The runner calls
these hooks on every ``TrainerCallback``; plain Keras callbacks (a dotted path in
``callbacks``) simply do not take part.
"""

from __future__ import annotations

import keras


class TrainerCallback(keras.callbacks.Callback):
    """Base of the framework's callbacks. Hooks the runner calls, in order:

    * ``prepare_optimizer(optimizer) -> optimizer`` before compile (the NaN guard's skip mode
      wraps it);
    * ``set_position(steps_per_epoch, batch_offset)`` before each ``fit`` call;
    * after each ``fit`` call it reads ``error``: a one-line reason to stop the run, or None.

    ``is_guard`` callbacks run before the others, so a checkpoint taken after a bad step
    is never written.
    """

    is_guard = False

    def __init__(self):
        super().__init__()
        self.error: str | None = None
        self.steps_per_epoch = 0
        self.batch_offset = 0
        self.epoch = 0

    def prepare_optimizer(self, optimizer):
        """The optimizer to compile with (default: unchanged)."""
        return optimizer

    def set_position(self, steps_per_epoch: int, batch_offset: int = 0) -> None:
        """Before each ``fit``: the first epoch of it starts ``batch_offset`` batches in."""
        self.steps_per_epoch = int(steps_per_epoch)
        self.batch_offset = int(batch_offset)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.batch_offset = 0  # only the first epoch of a fit call is shortened
        self.epoch = epoch + 1

    def batches_done(self, batch: int) -> int:
        """Batches of the current epoch trained once ``batch`` (fit's index) has ended."""
        return self.batch_offset + int(batch) + 1

    def global_step(self, batch: int) -> int:
        return self.epoch * self.steps_per_epoch + self.batches_done(batch)


def guards_first(callbacks: list) -> list:
    """``callbacks`` with the guards before the rest (stable otherwise)."""
    return sorted(callbacks, key=lambda c: not (isinstance(c, TrainerCallback) and c.is_guard))


def first_error(callbacks: list) -> str | None:
    """The reason a callback gave to stop the run, if any."""
    return next((c.error for c in callbacks if isinstance(c, TrainerCallback) and c.error), None)
