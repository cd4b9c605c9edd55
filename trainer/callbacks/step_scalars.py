"""Loss and learning rate every N steps, for TensorBoard's step curves.

Keras's TensorBoard callback writes epoch means; a run with few long epochs then
shows a handful of points. This writes, every ``every`` optimizer steps, the
loss of the latest step and the learning rate there, at the optimizer's step,
into ``<run>/tensorboard/steps`` (tags ``step/loss``, ``step/learning_rate``).

Keras's batch logs hold the epoch's running mean of the loss; the latest step's
loss is recovered from two consecutive means (with ``steps_per_execution`` > 1:
the mean of the steps since the previous call). Built by ``trainer.records.loggers``
when TensorBoard is on.

It reads every step's logs, so its batch-end hook is ``async_safe``: Keras runs it
on a worker thread and the training thread never waits for the device
(``trainer.callbacks.base``). On that thread nothing touches the model's state (``unsynced_model``): the step is
counted from fit's batch index on top of the optimizer's step read when each epoch
begins (on the training thread), and a learning-rate schedule is evaluated at that
step rather than through the optimizer's variables.
"""

from __future__ import annotations

import math
import threading

import keras

from trainer.keras_private import learning_rate_schedule, unsynced_model
from trainer.records import ScalarWriter


class StepScalars(keras.callbacks.Callback):
    """``step/loss`` and ``step/learning_rate`` every ``every`` optimizer steps."""

    async_safe = True

    def __init__(self, folder: str, every: int):
        super().__init__()
        self.every = max(int(every), 1)
        self._scalars = ScalarWriter(folder, to_wandb=False)
        self._lock = threading.Lock()  # batch-end hooks of consecutive calls may overlap
        self._previous = (0, 0.0)  # (batches of this epoch, their mean loss)
        self._epoch_start_step = 0
        self._rate = None  # (schedule or None, fixed rate or None)

    def on_epoch_begin(self, epoch, logs=None):
        # The training thread, between epochs: every worker-thread hook has finished
        optimizer = self.model.optimizer
        self._previous = (0, 0.0)
        self._epoch_start_step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        schedule = learning_rate_schedule(optimizer)
        self._rate = (schedule, None if schedule is not None else learning_rate(optimizer))

    def on_train_batch_end(self, batch, logs=None):
        count, mean = int(batch) + 1, (logs or {}).get("loss")
        step = self._epoch_start_step + count
        with self._lock:
            latest = None
            if mean is not None and math.isfinite(float(mean)) and count > self._previous[0]:
                before, before_mean = self._previous
                latest = (count * float(mean) - before * before_mean) / (count - before)
                self._previous = (count, float(mean))
            # due when this call crossed a multiple of every (a call may train several steps)
            calls_steps = max(int(unsynced_model(self).steps_per_execution or 1), 1)
            if step // self.every == (step - calls_steps) // self.every:
                return
            scalars = {} if latest is None else {"step/loss": latest}
            rate = self._rate_at(step)
            if rate is not None:
                scalars["step/learning_rate"] = rate
            if scalars:
                self._scalars.write(scalars, step)

    def _rate_at(self, step: int) -> float | None:
        schedule, fixed = self._rate or (None, None)
        if schedule is None:
            return fixed
        # at the optimizer's step, as ``optimizer.learning_rate`` reads it after the step
        return float(keras.ops.convert_to_numpy(schedule(step)))

    def on_train_end(self, logs=None):
        self._scalars.close()


def learning_rate(optimizer) -> float | None:
    """The optimizer's learning rate at its current step (a schedule evaluated), or None."""
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):  # a custom optimizer without one
        return None
