"""The contract between the runner (``trainer.run``, ``trainer.bench``) and its callbacks.

A ``TrainerCallback`` is a Keras callback that also knows where in the run each
batch is (a resumed run starts ``fit`` part-way into an epoch), may wrap the
optimizer before compile, and may stop the run with a reason. The runner calls
these hooks on every ``TrainerCallback``; plain Keras callbacks (a dotted path in
``callbacks``) simply do not take part.

Step boundaries never make the host wait for the device. Keras turns every step's
logs into Python numbers before the next step is dispatched as soon as one callback
has a batch-*end* hook that is not ``async_safe``; under JAX that serialises host and
device (the GPU idles while Python runs the loop), and reading a model or optimizer
variable there also writes the whole training state back. So the framework's
callbacks act at ``on_train_batch_begin`` (no logs, nothing to wait for) on positions
counted on the host, through ``host_model`` (``Callback.model`` under JAX writes the
whole training state back into the variables at every access), and only the callbacks that must read a step's logs (the NaN
guard, the step curves) have batch-end hooks, marked ``async_safe``: Keras runs them
on a worker thread, where the wait for the logs blocks no one.
``per_step_waits(callbacks)`` names any callback that breaks this, the runner warns
about it, and ``tests/trainer/test_step_boundaries.py`` checks every registered one.

A guard checks steps off the training thread, so a callback that writes the state
(the checkpoint) first waits, with ``wait_for_guards``, until the guards have seen
every step before it: a state a guard would reject is never saved.
"""

from __future__ import annotations

import abc
import threading

import keras

from trainer.keras_private import unsynced_model


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

    def batches_before(self, batch: int) -> int:
        """Batches of the current epoch trained when ``batch`` (fit's index) begins."""
        return self.batch_offset + int(batch)

    def step_before(self, batch: int) -> int:
        """The run's step when ``batch`` begins: the steps trained so far."""
        return self.epoch * self.steps_per_epoch + self.batches_before(batch)

    @property
    def host_model(self) -> keras.Model:
        """The model without Keras's JAX write-back of the training state (``self.model`` does
        that on every access): for ``stop_training`` and other host attributes at a boundary."""
        return unsynced_model(self)

    def batches_in_call(self) -> int:
        """Batches one call of the compiled step trains (``steps_per_execution``)."""
        return max(int(self.host_model.steps_per_execution or 1), 1)

    # -- guards ---------------------------------------------------------------------------
    guards: tuple = ()  # set by ``guards_first`` on the callbacks after the guards

    def wait_for_guards(self, calls: int) -> None:
        """Block until every guard has checked the first ``calls`` calls of this ``fit``."""
        for guard in self.guards:
            guard.wait_checked(calls)


class StepGuard(TrainerCallback):
    """A guard that checks each call's logs at the batch end, off the training thread.

    Subclasses call ``checked()`` once per batch-end hook, whatever they found (after
    setting ``error`` and ``stop_training`` for a bad step).
    """

    is_guard = True
    wait_seconds = 600.0  # a device that has not finished the previous call by then is stuck

    def __init__(self):
        super().__init__()
        self._checked_calls = 0
        self._condition = threading.Condition()

    def on_train_begin(self, logs=None):
        with self._condition:
            self._checked_calls = 0

    def checked(self) -> None:
        with self._condition:
            self._checked_calls += 1
            self._condition.notify_all()

    def wait_checked(self, calls: int) -> None:
        with self._condition:
            if not self._condition.wait_for(lambda: self._checked_calls >= calls, timeout=self.wait_seconds):
                raise RuntimeError(f"{type(self).__name__} had not checked step {calls} of this fit after "
                                   f"{self.wait_seconds:.0f} s: the device has stopped answering")


def guards_first(callbacks: list) -> list:
    """``callbacks`` with the guards before the rest (stable otherwise); the others get the
    guards to wait for (``wait_for_guards``)."""
    ordered = sorted(callbacks, key=lambda c: not (isinstance(c, TrainerCallback) and c.is_guard))
    guards = tuple(c for c in ordered if isinstance(c, StepGuard))
    for callback in ordered:
        if isinstance(callback, TrainerCallback) and not callback.is_guard:
            callback.guards = guards
    return ordered


def per_step_waits(callbacks: list) -> list[str]:
    """The callbacks that make Keras wait for every step's logs on the training thread (a batch-end
    hook not marked ``async_safe``): under JAX each one serialises host and device."""
    base = keras.callbacks.Callback
    found = []
    for callback in callbacks:
        if getattr(callback, "async_safe", False):
            continue
        kind = type(callback)
        if any(getattr(kind, hook) is not getattr(base, hook)
               for hook in ("on_batch_end", "on_train_batch_end")):
            found.append(kind.__name__)
    return found


def first_error(callbacks: list) -> str | None:
    """The reason a callback gave to stop the run, if any."""
    return next((c.error for c in callbacks if isinstance(c, TrainerCallback) and c.error), None)


class EveryNSteps(keras.callbacks.Callback, abc.ABC):
    """Calls ``evaluate(step)`` each time the optimizer's step passes a multiple of ``every_steps``,
    at the step boundary (``on_train_batch_begin``: no batch-end hook, see above), and once at
    the end of training if the last step was not evaluated. The step is counted on the host:
    the optimizer's step read when each epoch begins, plus fit's batch index."""

    every_steps = 0

    def __init__(self):
        super().__init__()
        self._epoch_start_step = 0
        self._boundary = None  # the step at the previous boundary of this fit
        self._last_step = None  # the step last evaluated

    def should_evaluate(self) -> bool:
        return True

    @abc.abstractmethod
    def evaluate(self, step: int):
        """The periodic work at optimizer step ``step`` (verification, retrieval)."""

    def optimizer_step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_begin(self, logs=None):
        self._boundary = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start_step = self.optimizer_step()  # between epochs the state is in place

    def on_train_batch_begin(self, batch, logs=None):
        step = self._epoch_start_step + int(batch)
        previous, self._boundary = self._boundary, step
        if (self.every_steps and previous is not None and self.should_evaluate()
                and step // self.every_steps > previous // self.every_steps and step != self._last_step):
            self.evaluate(step)

    def on_train_end(self, logs=None):
        if self.should_evaluate() and self.optimizer_step() != self._last_step:
            self.evaluate(self.optimizer_step())

