"""Timing the framework inside one ``fit`` call, with the other measurements in between.

``fit`` is run once for warm-up + windows x steps; the ``Interleaver``
callback (first in the callback list) marks window boundaries at
``on_train_batch_begin`` and, at each boundary, runs one window of every
other measurement (minimal step, input pipeline). So a framework window holds
every per-step cost of the real path (data iteration, the compiled step,
every callback's batch hooks, the progress bar) and none of ``fit``'s set-up
or the epoch-end work, which is timed separately (``epoch_end_seconds``).
Hooking ``on_train_batch_begin`` leaves Keras's asynchronous callback
dispatch (JAX) as it is: only ``*_batch_end`` hooks decide it.
"""

from __future__ import annotations

import time

from typing import Protocol

import keras

from trainer.keras_private import unsynced_model
from trainer.timings import wait_for_device


class Runner(Protocol):
    """What the interleaver drives between framework windows."""

    name: str

    def warmup(self, steps: int) -> None:
        """Run ``steps`` untimed steps (compilation, caches)."""

    def window(self, steps: int) -> float:
        """Seconds for ``steps`` steps (batches), finished (synchronised) on return."""


class Interleaver(keras.callbacks.Callback):
    """Framework windows delimited at step indices; other runners' windows run at each boundary."""

    def __init__(self, warmup_steps: int, steps_per_window: int, windows: int, runners, record,
                 steps_per_execution: int = 1, on_warm=None):
        super().__init__()
        self.on_warm = on_warm  # called once at the end of the warm-up (e.g. to read trace counts)
        self.steps_per_execution = int(steps_per_execution)  # boundaries must be multiples of it
        self.boundaries = [warmup_steps + k * steps_per_window for k in range(windows + 1)]
        self.runners = list(runners)
        self.record = record            # record(name, seconds, cpu_seconds) for every finished window
        self.warmup_steps = warmup_steps
        self.steps_per_window = steps_per_window
        self._next = 0
        self._window_start = None
        self._window_cpu = None
        self.fit_started = time.perf_counter()
        self.warmup_seconds = None
        self.epoch_end_started = None
        self.train_end_started = None

    @property
    def total_steps(self) -> int:
        """Steps ``fit`` must run: the last boundary is seen at the start of one more execution."""
        return self.boundaries[-1] + self.steps_per_execution

    def on_train_batch_begin(self, batch, logs=None):
        if self._next >= len(self.boundaries) or batch < self.boundaries[self._next]:
            return
        wait_for_device(unsynced_model(self))
        now, cpu = time.perf_counter(), time.process_time()
        if self._next == 0:
            self.warmup_seconds = now - self.fit_started
            if self.on_warm is not None:
                self.on_warm()
            for runner in self.runners:
                runner.warmup(self.warmup_steps)
        else:
            self.record("framework", now - self._window_start, cpu - self._window_cpu)
            for runner in self.runners:
                cpu = time.process_time()
                seconds = runner.window(self.steps_per_window)
                self.record(runner.name, seconds, time.process_time() - cpu)
        self._next += 1
        self._window_start, self._window_cpu = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end_started = time.perf_counter()

    def on_train_end(self, logs=None):
        # first in the list: what lies between is every other callback's epoch-end work
        self.train_end_started = time.perf_counter()

    @property
    def complete(self) -> bool:
        return self._next == len(self.boundaries)

