"""Time to first step: where a job's first seconds go, and whether it evaluates the untrained model.

``StartupTimer`` records, in seconds:

    import           process start → the timer's creation (Python, TensorFlow/JAX, Keras, Hydra)
    data             building the job: data set preparation, model, optimizer (``phase("data")``)
    untrained_eval   the untrained model's evaluation (``phase("untrained_eval")``)
    compile          tracing and XLA compilation of the training step (its first call, less
                     one ordinary step)
    first_step       one ordinary training step
    to_first_step    process start → the first training step done (the number a user feels)

The compile and step times come from ``on_train_batch_begin`` only: a batch-*end*
hook would make Keras wait for the device after every step under JAX.

``should_evaluate_untrained`` reads ``eval.untrained`` (true, false or auto). ``auto``
evaluates the untrained model only for short jobs on small held-out sets, where the
"untrained → trained" pair is the quickest proof that the job learns (the default
job: 552 steps, 3,000 pairs). A long job's untrained number is chance level and
teaches nothing, and large held-out sets (.bin files, many pairs) cost seconds to
minutes before the first step.
"""

from __future__ import annotations

import contextlib
import os
import time

import keras

from trainer.keras_private import unsynced_model

SHORT_JOB_STEPS = 2_000      # auto: at most this many training steps in the whole job
SMALL_HELDOUT_PAIRS = 3_000  # auto: at most this many verification pairs, and no .bin files
PHASES = ("import", "data", "untrained_eval", "compile", "first_step")

_MODULE_IMPORTED = time.time()


def process_started() -> float:
    """When this process started (wall clock, seconds since the epoch); Linux reads /proc,
    elsewhere the import of this module stands in for it."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return _MODULE_IMPORTED


class StartupTimer:
    """The seconds of each start-up phase; ``seconds()`` for metrics.json, ``line()`` to print."""

    def __init__(self, started: float | None = None):
        self.started = process_started() if started is None else started
        self.phases: dict[str, float] = {"import": time.time() - self.started}
        self.first_step_done: float | None = None

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.time()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.time() - start

    def callback(self, on_first_step=None) -> keras.callbacks.Callback:
        """A Keras callback that times the first steps of the next ``fit``; ``on_first_step(timer)``
        is called once they are known (e.g. ``lambda t: print(t.line())``)."""
        return _FirstSteps(self, on_first_step)

    def seconds(self) -> dict:
        """``{phase}_seconds`` for each phase measured, and ``to_first_step_seconds``."""
        found = {f"{name}_seconds": round(self.phases[name], 3) for name in PHASES if name in self.phases}
        if self.first_step_done is not None:
            found["to_first_step_seconds"] = round(self.first_step_done - self.started, 3)
        return found

    def line(self) -> str:
        names = {"import": "import", "data": "data", "untrained_eval": "untrained evaluation",
                 "compile": "compilation", "first_step": "first step"}
        parts = [f"{names[name]} {self.phases[name]:.1f} s" for name in PHASES if name in self.phases]
        total = (f"; first training step done {self.first_step_done - self.started:.1f} s after start"
                 if self.first_step_done is not None else "")
        return "start-up: " + ", ".join(parts) + total


class _FirstSteps(keras.callbacks.Callback):
    """Batch 0's begin → batch 1's begin holds tracing, compilation and one step; batch 1 → 2 one
    step. Under JAX the steps are dispatched ahead, so the device is awaited at the boundaries."""

    def __init__(self, timer: StartupTimer, on_first_step):
        super().__init__()
        self.timer, self.on_first_step = timer, on_first_step
        self.begins: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        if len(self.begins) >= 3:
            return
        wait_for_device(unsynced_model(self))
        self.begins.append(time.time())
        if len(self.begins) == 2:
            self.timer.first_step_done = self.begins[1]
        if len(self.begins) == 3:
            first, step = self.begins[1] - self.begins[0], self.begins[2] - self.begins[1]
            self.timer.phases["compile"] = max(first - step, 0.0)
            self.timer.phases["first_step"] = step
            if self.on_first_step is not None:
                self.on_first_step(self.timer)


def wait_for_device(model) -> None:
    """JAX dispatches steps ahead of the device: wait for the model's training state before
    reading the clock (a no-op elsewhere)."""
    state = getattr(model, "_jax_state", None)
    if state:
        import jax

        # Keras keeps the state in its own tracking containers, which JAX does not walk as a
        # pytree (it would wait on nothing): hand it the arrays themselves.
        jax.block_until_ready([array for part in state.values() for array in (part or ())])


# -- the untrained evaluation -------------------------------------------------------

def untrained_setting(cfg):
    """``eval.untrained`` (true | false | auto); auto when the evaluator's node does not say."""
    node = cfg.get("eval")
    value = node.get("untrained") if node is not None else None
    return "auto" if value is None else value


def should_evaluate_untrained(cfg, job) -> bool:
    """Whether the job evaluates its untrained model before training (see the module's doc)."""
    if getattr(job, "evaluator", None) is None:
        return False
    setting = untrained_setting(cfg)
    if isinstance(setting, str):
        lowered = setting.strip().lower()
        if lowered != "auto":
            return lowered in ("true", "yes", "1", "on")
    else:
        return bool(setting)
    steps = int(job.epochs) * int(job.steps_per_epoch)
    node = cfg.get("eval") or {}
    pairs = int(node.get("pairs") or 0)
    return (steps <= SHORT_JOB_STEPS and pairs <= SMALL_HELDOUT_PAIRS
            and not list(node.get("bin_files") or []))
