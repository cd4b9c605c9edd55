"""Checkpoints of the whole training state: written atomically, found, read.

A checkpoint is one ``.weights.h5`` file holding the loop's variables (model,
head, stateful-loss state) and the optimizer's (its step counter included, so
the learning-rate schedule resumes where it was; the loss scale too), plus
``latest.json`` naming it with the data position: ``epoch`` (the epoch in
progress) and ``batch`` (batches of it already trained). ``latest.json`` is
replaced only after the weights file is complete, so a crash never leaves it
pointing at half a file; on ``gs://`` the file is written locally and uploaded
as one object.

This module has plain functions (``save_checkpoint``, ``restore_checkpoint``
and the finders) and the ``Checkpoint`` callback, which only saves: at epoch
ends, every ``every_steps`` steps and/or ``every_seconds``. Where a run resumes
is the runner's (``trainer.resume``), and so is the save at the step an
interruption reached (``trainer.signals``), with or without this callback.

A checkpoint is written only when every variable (weights, BatchNorm
statistics, optimizer slots) is finite, so "the last good checkpoint" is good.
Each weights file has a ``ckpt-<step>.json`` beside it with its data position:
when the newest file is unreadable (a truncated copy, a full disk), resume
falls back to the newest one that reads, with a warning. The callback prunes
only checkpoints it wrote itself, and only after a newer one is on disk.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time

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
    if not well_formed_state(state):  # hand-edited or damaged: the weights files' own sidecars remain
        print(f"warning: {path} is not a checkpoint record (edited or damaged); it is ignored, and the "
              "checkpoints' own records are used", flush=True)
        return None
    state.setdefault("batch", 0)
    return state


def well_formed_state(state) -> bool:
    """A checkpoint record as the runner wrote it: a weights file of this folder and whole-number positions."""
    if not isinstance(state, dict) or not isinstance(state.get("file"), str):
        return False
    name = state["file"]
    if "/" in name or "\\" in name or not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
        return False
    return all(isinstance(state.get(key, 0), int) and not isinstance(state.get(key, 0), bool)
               and state.get(key, 0) >= 0 for key in ("epoch", "batch", "step"))


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


def save_checkpoint(model, folder: str, epoch: int, batch: int, step: int, *,
                    steps_per_epoch: int, batch_size: int | None) -> str | None:
    """Write ``model``'s full state at data position (``epoch``, ``batch``) = global ``step``.

    Returns the weights file's path, or None when a variable is not finite (a
    checkpoint must be good to resume from: the last one that was stays newest).

    In a multi-process JAX job every process calls it (the rows split across processes
    are gathered: ``trainer.processes.whole_values``) and process 0 alone writes the
    one checkpoint; the others return the path it wrote.
    """
    from trainer import processes

    bad = non_finite_variable(model)
    if bad is not None:
        print(f"warning: not saving step {step}: {bad} is not finite", flush=True)
        return None
    name = f"{PREFIX}{step:09d}{SUFFIX}"
    with processes.whole_values(model):
        if processes.index() != 0:
            return io.join(folder, name)
        io.makedirs(folder)
        io.save_file(io.join(folder, name), model.save_weights)
    state = {"file": name, "epoch": int(epoch), "batch": int(batch), "step": int(step),
             "optimizer_step": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
             "steps_per_epoch": int(steps_per_epoch), "batch_size": batch_size,
             "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "random_states": [keras.ops.convert_to_numpy(v.value).tolist() for v in random_states(model)]}
    text = json.dumps(state, indent=2) + "\n"
    io.write_text(io.join(folder, name[:-len(SUFFIX)] + ".json"), text)
    io.write_text(io.join(folder, LATEST), text)  # last: it names a complete file
    return io.join(folder, name)


def restore_checkpoint(model, path: str, saved_random_states=None) -> None:
    """Load the weights file ``path`` into ``model`` (built, optimizer too) and its random states."""
    try:
        io.load_file(path, model.load_weights)
    except (ValueError, KeyError) as error:
        raise ConfigError(f"the checkpoint {path} does not fit this model ({first_line(error)}); "
                          "was the config changed? resume with the same command, or start fresh "
                          "with trainer.resume=never") from None
    states = random_states(model)
    if saved_random_states is not None and len(saved_random_states) == len(states):
        for variable, value in zip(states, saved_random_states):
            variable.assign(np.asarray(value, variable.dtype))


@CALLBACKS.register("checkpoint")
class Checkpoint(TrainerCallback):
    """Save at each epoch end, every ``every_steps`` steps and/or every ``every_seconds``."""

    def __init__(self, run_dir, every_steps: int = 0, every_seconds: float = 0, keep: int = 2, config=None):
        super().__init__()
        self.folder = checkpoint_dir(str(run_dir))
        self.every_steps = int(every_steps or 0)
        self.every_seconds = float(every_seconds or 0)
        self.keep = max(int(keep), 1)
        trainer_node = config.get("trainer") if config is not None else None
        self.batch_size = int(trainer_node.batch_size) if trainer_node is not None else None
        self._last_saved_step = None  # the step the current fit started from, then each save
        self._last_save_time = time.monotonic()
        self._done_in_epoch = 0
        self._written: list[str] = []  # checkpoints of this run, the only ones it prunes

    def check_compatible(self, steps_per_epoch: int, batch_size: int) -> None:
        """The batch size the checkpoints record, for a caller that trains other batches than the
        config's (``trainer.bench``); the runner's resume plan checks compatibility itself."""
        self.batch_size = int(batch_size)

    # -- keras hooks ------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._last_saved_step = None
        self._last_save_time = time.monotonic()
        self._calls_begun = 0

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._done_in_epoch = self.batch_offset
        if self._last_saved_step is None:  # a resumed fit counts its steps from where it starts
            self._last_saved_step = epoch * self.steps_per_epoch + self.batch_offset

    def on_train_batch_begin(self, batch, logs=None):
        # The boundary after the previous call is the one before this call: saving here needs no
        # batch-end hook, so the steps before it were dispatched without waiting (see base).
        calls_done, self._calls_begun = self._calls_begun, self._calls_begun + 1
        done = self.batches_before(batch)
        # what this call will have trained if it is the epoch's last (a stop ends the epoch after it)
        self._done_in_epoch = min(done + self.batches_in_call(), self.steps_per_epoch or done + 1)
        if calls_done == 0 or self.host_model.stop_training:
            return
        step = self.step_before(batch)
        due_steps = self.every_steps and step // self.every_steps > self._last_saved_step // self.every_steps
        due_time = self.every_seconds and time.monotonic() - self._last_save_time >= self.every_seconds
        if due_steps or due_time:
            self.wait_for_guards(calls_done)
            if not self.host_model.stop_training:  # a guard stopped on a bad step: keep the last good state
                self.save(self.epoch, done, step)

    def on_epoch_end(self, epoch, logs=None):
        complete = not self.steps_per_epoch or self._done_in_epoch >= self.steps_per_epoch
        if complete and not self.host_model.stop_training:  # stopped: a guard's bad step, or an interruption
            self.save(epoch + 1, 0, (epoch + 1) * self.steps_per_epoch)  # (the runner saves that one)
        super().on_epoch_end(epoch, logs)

    # -- saving -----------------------------------------------------------
    def save(self, epoch: int, batch: int, step: int) -> str | None:
        """Write the full state at data position (``epoch``, ``batch``) = global ``step``."""
        self._last_saved_step = step
        self._last_save_time = time.monotonic()
        path = save_checkpoint(self.model, self.folder, epoch, batch, step,
                               steps_per_epoch=self.steps_per_epoch, batch_size=self.batch_size)
        from trainer import processes

        if path is not None and processes.index() == 0:  # the writer alone prunes
            self._written.append(path.rsplit("/", 1)[-1])
            self._prune()
        return path

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
    from trainer import processes

    optimizer = getattr(model, "optimizer", None)
    variables = list(model.variables) + (list(optimizer.variables) if optimizer is not None else [])
    for variable in variables:
        for copy in replica_copies(variable):  # a sharded variable: every replica's values
            value = processes.to_numpy(copy)  # multi-process: gathered (every process checks)
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
