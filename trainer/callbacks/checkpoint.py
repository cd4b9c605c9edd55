"""Checkpoints of the whole training state, written atomically, and resume to the batch.

A checkpoint is one ``.weights.h5`` file holding the loop's variables (model,
head, stateful-loss state) and the optimizer's (its step counter included, so
the learning-rate schedule resumes where it was; the loss scale too), plus
``latest.json`` naming it with the data position: ``epoch`` (the epoch in
progress) and ``batch`` (batches of it already trained). ``latest.json`` is
replaced only after the weights file is complete, so a crash never leaves it
pointing at half a file; on ``gs://`` the file is written locally and uploaded
as one object.

Resume is exact to the batch: the pipeline gives each epoch its own seeded
order, so the run skips the ``batch`` batches of the interrupted epoch already
trained, finishes that epoch in a first ``fit`` call, and continues with whole
epochs in a second one (``resume_segments``).

SIGTERM (what a preempted Cloud TPU VM or Kubernetes sends) makes the callback
save at the end of the current step and stop training; the run then ends with
status ``interrupted`` and exit code 143, and rerunning the command resumes.

A checkpoint is written only when every variable (weights, BatchNorm
statistics, optimizer slots) is finite, so "the last good checkpoint" is good.
Each weights file has a ``ckpt-<step>.json`` beside it with its data position:
when the newest file is unreadable (a truncated copy, a full disk), resume
falls back to the newest one that reads, with a warning. A run prunes only
checkpoints it wrote itself, and only after a newer one is on disk.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass

import keras
import numpy as np

from trainer import io
from trainer.errors import first_line
from trainer.callbacks.base import TrainerCallback
from trainer.keras_private import symbolic_build
from trainer.replicas import replica_copies
from trainer.registry import CALLBACKS, ConfigError

LATEST = "latest.json"
PREFIX = "ckpt-"
SUFFIX = ".weights.h5"


def checkpoint_dir(run_dir: str) -> str:
    return io.join(str(run_dir), "checkpoints")


def _read_state(path: str) -> dict | None:
    try:
        state = json.loads(io.read_text(path))
    except (OSError, ValueError):
        return None
    except Exception as error:  # tf.errors.NotFoundError on remote paths
        if type(error).__name__ == "NotFoundError":
            return None
        raise
    if not isinstance(state, dict) or "file" not in state:
        return None
    state.setdefault("batch", 0)
    return state


def latest_checkpoint(run_dir: str) -> dict | None:
    """``{"file", "epoch", "batch", "step", ...}`` of the newest complete checkpoint, or None."""
    folder = checkpoint_dir(run_dir)
    state = _read_state(io.join(folder, LATEST))
    if not state or not io.exists(io.join(folder, state["file"])):
        return None
    return state


def checkpoint_candidates(folder: str) -> list[dict]:
    """Every checkpoint of ``folder`` with a known data position, newest first."""
    states = {}
    latest = _read_state(io.join(folder, LATEST))
    if latest:
        states[latest["file"]] = latest
    for name in io.listdir(folder):
        if name.startswith(PREFIX) and name.endswith(".json"):
            state = _read_state(io.join(folder, name))
            if state and state["file"] not in states:
                states[state["file"]] = state
    present = set(io.listdir(folder))
    return sorted((s for s in states.values() if s["file"] in present),
                  key=lambda s: int(s.get("step", 0)), reverse=True)


def readable(path: str) -> bool:
    """Whether a weights file opens and lists its variables (a truncated copy does not)."""
    if io.is_remote(path):
        return True  # checked when loaded
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return len(f.keys()) > 0
    except (OSError, ValueError):
        return False


def restorable_checkpoint(folder: str) -> dict | None:
    """The newest checkpoint of ``folder`` that reads; warns about each newer one skipped."""
    for state in checkpoint_candidates(folder):
        path = io.join(folder, state["file"])
        if readable(path):
            return state
        print(f"warning: checkpoint {path} is unreadable (truncated or corrupt); "
              "falling back to the one before it", flush=True)
    return None


def checkpoint_at(path: str, steps_per_epoch: int | None = None) -> dict:
    """``trainer.resume=<path>``: a run folder, its checkpoints folder, or one weights file."""
    path = str(path)
    if os.path.isdir(path):
        folder = path if os.path.exists(os.path.join(path, LATEST)) or not os.path.isdir(
            os.path.join(path, "checkpoints")) else os.path.join(path, "checkpoints")
        state = restorable_checkpoint(folder)
        if state is None:
            raise ConfigError(f"trainer.resume={path}: no readable checkpoint in {folder}")
        return {**state, "folder": folder}
    folder, name = os.path.split(path)
    if not (name.startswith(PREFIX) and name.endswith(SUFFIX)) or not readable(path):
        raise ConfigError(f"trainer.resume={path} is not a readable {PREFIX}<step>{SUFFIX} file")
    state = _read_state(os.path.join(folder, name[:-len(SUFFIX)] + ".json"))
    if state is None:  # no sidecar: the position follows from the step
        step = int(name[len(PREFIX):-len(SUFFIX)])
        epoch, batch = divmod(step, steps_per_epoch) if steps_per_epoch else (0, step)
        state = {"file": name, "step": step, "epoch": epoch, "batch": batch}
    return {**state, "folder": folder}


@dataclass(frozen=True)
class Segment:
    """One ``fit`` call: epochs ``[start_epoch, end_epoch)``; the first skips ``skip_batches``."""

    start_epoch: int
    end_epoch: int
    skip_batches: int = 0


def resume_segments(epoch: int, batch: int, epochs: int, steps_per_epoch: int) -> list[Segment]:
    """The ``fit`` calls that train from data position (``epoch``, ``batch``) to the end.

    Keras's ``fit`` has no partial first epoch, so a mid-epoch resume is two
    calls: the rest of the interrupted epoch (``steps_per_epoch - batch`` steps),
    then the whole epochs after it.
    """
    if batch >= steps_per_epoch:  # saved on the epoch's last batch
        epoch, batch = epoch + 1, 0
    if epoch >= epochs:
        return []
    if batch == 0:
        return [Segment(epoch, epochs)]
    segments = [Segment(epoch, epoch + 1, batch)]
    if epoch + 1 < epochs:
        segments.append(Segment(epoch + 1, epochs))
    return segments


@CALLBACKS.register("checkpoint")
class Checkpoint(TrainerCallback):
    """Save at each epoch end, every ``every_steps`` steps and/or ``every_seconds``; restore on start."""

    def __init__(self, run_dir, every_steps: int = 0, every_seconds: float = 0, keep: int = 2,
                 save_on_sigterm: bool = True, config=None):
        super().__init__()
        self.run_dir = str(run_dir)
        self.folder = checkpoint_dir(self.run_dir)
        self.every_steps = int(every_steps or 0)
        self.every_seconds = float(every_seconds or 0)
        self.keep = max(int(keep), 1)
        self.save_on_sigterm = bool(save_on_sigterm)
        self.restore_from = None     # set by choose_restore(): the state to resume from
        self.writes = True           # False on non-chief workers of a multi-worker job
        self.preempted = False
        self.saved: dict | None = None
        self._restored = False
        self._last_saved_step = -1
        self._last_save_time = time.monotonic()
        self._sigterm = threading.Event()
        self._previous_handler = None
        self._done_in_epoch = 0
        self._written: list[str] = []  # checkpoints of this run, the only ones it prunes
        self.batch_size = None

    def choose_restore(self, resume: str, steps_per_epoch: int | None = None) -> dict | None:
        """Where to resume from: ``auto`` (this run's newest readable checkpoint), ``never``, or a path."""
        if resume == "never":
            self.restore_from = None
        elif resume == "auto":
            self.restore_from = restorable_checkpoint(self.folder)
        else:
            self.restore_from = checkpoint_at(resume, steps_per_epoch)
        return self.restore_from

    def restore_path(self) -> str:
        return io.join(self.restore_from.get("folder", self.folder), self.restore_from["file"])

    def restore(self, model) -> None:
        """Load the chosen checkpoint into ``model`` (built) and its optimizer, once."""
        if not self.restore_from or self._restored:
            return
        path = self.restore_path()
        try:
            io.load_file(path, model.load_weights)
        except (ValueError, KeyError) as error:
            raise ConfigError(f"the checkpoint {path} does not fit this model ({first_line(error)}); "
                              "was the config changed? resume with the same command, or start fresh "
                              "with trainer.resume=never") from None
        saved_states = self.restore_from.get("random_states")
        states = random_states(model)
        if saved_states is not None and len(saved_states) == len(states):
            for variable, value in zip(states, saved_states):
                variable.assign(np.asarray(value, variable.dtype))
        print(f"resumed from {path} (epoch {self.initial_epoch + 1}, batch {self.initial_batch}, "
              f"step {self.restore_from.get('step')})", flush=True)
        self._last_saved_step = int(self.restore_from.get("step", 0))
        self._restored = True

    # -- where to resume --------------------------------------------------
    @property
    def initial_epoch(self) -> int:
        return int(self.restore_from["epoch"]) if self.restore_from else 0

    @property
    def initial_batch(self) -> int:
        return int(self.restore_from.get("batch", 0)) if self.restore_from else 0

    def check_compatible(self, steps_per_epoch: int, batch_size: int) -> None:
        """A resumed run must cut epochs into the same batches, or the data position is wrong."""
        self.batch_size = int(batch_size)
        if not self.restore_from:
            return
        for key, value in (("steps_per_epoch", steps_per_epoch), ("batch_size", batch_size)):
            saved = self.restore_from.get(key)
            if saved is not None and int(saved) != int(value):
                raise ConfigError(
                    f"the checkpoint in {self.folder} was trained with {key}={saved}, this run has "
                    f"{value}; keep the same trainer settings to resume, or start fresh with "
                    "trainer.resume=never (or another run.name)")

    # -- keras hooks ------------------------------------------------------
    def on_train_begin(self, logs=None):
        # fit() has built the model and optimizer by now, so every variable exists to load into.
        if not self._restored:
            self._last_saved_step = 0
            self.restore(self.model)
        self._restored = True
        self._last_save_time = time.monotonic()
        if self.save_on_sigterm and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def on_train_end(self, logs=None):
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def _on_sigterm(self, signum, frame):
        self._sigterm.set()  # acted on at the end of the running step

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._done_in_epoch = self.batch_offset

    def on_train_batch_end(self, batch, logs=None):
        self._done_in_epoch = self.batches_done(batch)
        if self.model.stop_training:  # a guard stopped on a bad step: keep the last good state
            return
        step = self.global_step(batch)
        if self._sigterm.is_set():
            self.save(self.epoch, self._done_in_epoch, step)
            self.preempted = True
            self.model.stop_training = True
            print(f"SIGTERM: saved step {step} to {self.folder}; rerun the same command to resume",
                  flush=True)
            return
        due_steps = self.every_steps and step // self.every_steps > self._last_saved_step // self.every_steps
        due_time = self.every_seconds and time.monotonic() - self._last_save_time >= self.every_seconds
        if (due_steps or due_time) and self._done_in_epoch < self.steps_per_epoch:
            self.save(self.epoch, self._done_in_epoch, step)

    def on_epoch_end(self, epoch, logs=None):
        complete = not self.steps_per_epoch or self._done_in_epoch >= self.steps_per_epoch
        if complete and not (self.model.stop_training and not self.preempted):
            self.save(epoch + 1, 0, (epoch + 1) * self.steps_per_epoch)
        super().on_epoch_end(epoch, logs)

    # -- saving -----------------------------------------------------------
    def save(self, epoch: int, batch: int, step: int) -> str | None:
        """Write the full state at data position (``epoch``, ``batch``) = global ``step``."""
        self._last_saved_step = step
        self._last_save_time = time.monotonic()
        if not self.writes or self.saved and self.saved.get("step") == step:
            return None
        bad = non_finite_variable(self.model)
        if bad is not None:  # a checkpoint must be good to resume from: keep the last one that was
            print(f"warning: not saving step {step}: {bad} is not finite", flush=True)
            return None
        name = f"{PREFIX}{step:09d}{SUFFIX}"
        io.makedirs(self.folder)
        io.save_file(io.join(self.folder, name), self.model.save_weights)
        optimizer = self.model.optimizer
        state = {"file": name, "epoch": int(epoch), "batch": int(batch), "step": int(step),
                 "optimizer_step": int(keras.ops.convert_to_numpy(optimizer.iterations)),
                 "steps_per_epoch": self.steps_per_epoch, "batch_size": self.batch_size,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "random_states": [keras.ops.convert_to_numpy(v.value).tolist()
                                   for v in random_states(self.model)]}
        text = json.dumps(state, indent=2) + "\n"
        io.write_text(io.join(self.folder, name[:-len(SUFFIX)] + ".json"), text)
        io.write_text(io.join(self.folder, LATEST), text)
        self.saved = state
        self._written.append(name)
        self._prune()
        return io.join(self.folder, name)

    def _prune(self) -> None:
        """Remove this run's older checkpoints beyond ``keep`` (the newest is already on disk)."""
        while len(self._written) > self.keep:
            name = self._written.pop(0)
            for file in (name, name[:-len(SUFFIX)] + ".json"):
                try:
                    io.remove(io.join(self.folder, file))
                except OSError:
                    pass


def random_states(model) -> list:
    """The model's random-generator states (dropout, noise inputs): variables of the model
    that ``save_weights`` leaves out, kept in the checkpoint's JSON so a resumed run draws
    exactly what an uninterrupted one would."""
    saved = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in saved]


def non_finite_variable(model) -> str | None:
    """The path of the first model or optimizer variable holding NaN/Inf, or None."""
    optimizer = getattr(model, "optimizer", None)
    variables = list(model.variables) + (list(optimizer.variables) if optimizer is not None else [])
    for variable in variables:
        for copy in replica_copies(variable):  # a sharded variable: every replica's values
            value = keras.ops.convert_to_numpy(copy)
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                return getattr(variable, "path", variable.name)
    return None


def build_before_restore(model, batches):
    """Create every variable (model and optimizer) so that a checkpoint can load before step 1.

    Under a tf.distribute strategy and under JAX, ``fit`` builds the model
    before ``on_train_begin``; without a strategy TensorFlow defers it to the
    first traced step, too late to restore into. This does what ``fit`` does
    under a strategy, from the batches' structure. Returns ``batches`` (a
    peeked generator is put back together).
    """
    optimizer = getattr(model, "optimizer", None)
    if model.built and (optimizer is None or optimizer.built):
        return batches
    if hasattr(batches, "element_spec"):
        sample = batches.element_spec
    else:
        iterator = iter(batches)
        sample = next(iterator)
        batches = (batch for batch in itertools.chain([sample], iterator))
    symbolic_build(model, sample)  # keras's own pre-fit build (no public API for it)
    return batches


def last_good_checkpoint(run_dir: str) -> str:
    """One phrase for messages: where the newest complete checkpoint is, or that there is none."""
    latest = latest_checkpoint(run_dir)
    if not latest:
        return "no checkpoint was saved before it"
    return f"last good checkpoint: {io.join(checkpoint_dir(run_dir), latest['file'])} (step {latest['step']})"


def is_finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True
