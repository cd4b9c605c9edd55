"""Loss and learning rate every N optimizer steps, for TensorBoard's step curves.

Keras's TensorBoard callback writes epoch means; a run with few long epochs then
shows a handful of points. This writes, every ``every`` optimizer steps, the
loss of the latest step and the learning rate there, at the optimizer's step,
into ``<run>/tensorboard/steps`` (tags ``step/loss``, ``step/learning_rate``).

Keras's batch logs hold the epoch's running mean of the loss; the latest step's
loss is recovered from two consecutive means (with ``steps_per_execution`` > 1:
the mean of the steps since the previous call). Built by ``trainer.records.loggers``
when TensorBoard is on; the run already reads each step's logs (its guards do),
so this adds no host synchronisation of its own.
"""

from __future__ import annotations

import math

import keras

from trainer.records import ScalarWriter


class StepScalars(keras.callbacks.Callback):
    """``step/loss`` and ``step/learning_rate`` every ``every`` optimizer steps."""

    def __init__(self, folder: str, every: int):
        super().__init__()
        self.every = max(int(every), 1)
        self._scalars = ScalarWriter(folder, to_wandb=False)
        self._previous = (0, 0.0)  # (batches of this epoch, their mean loss)
        self._next_step = None

    def on_epoch_begin(self, epoch, logs=None):
        self._previous = (0, 0.0)

    def on_train_batch_end(self, batch, logs=None):
        count, mean = int(batch) + 1, (logs or {}).get("loss")
        latest = None
        if mean is not None and math.isfinite(float(mean)) and count > self._previous[0]:
            before, before_mean = self._previous
            latest = (count * float(mean) - before * before_mean) / (count - before)
            self._previous = (count, float(mean))
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if self._next_step is None:  # at multiples of every, also for a resumed run's fit
            self._next_step = -(-step // self.every) * self.every
        if step < self._next_step:
            return
        self._next_step = (step // self.every + 1) * self.every
        scalars = {} if latest is None else {"step/loss": latest}
        rate = learning_rate(self.model.optimizer)
        if rate is not None:
            scalars["step/learning_rate"] = rate
        if scalars:
            self._scalars.write(scalars, step)

    def on_train_end(self, logs=None):
        self._next_step = None
        self._scalars.close()


def learning_rate(optimizer) -> float | None:
    """The optimizer's learning rate at its current step (a schedule evaluated), or None."""
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):  # a custom optimizer without one
        return None
