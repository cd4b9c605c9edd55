"""The optional parts of the framework's training step, and how the bench switches each one off.

A ``Switch`` changes one thing in a copy of the job and nothing else:

    label_checks    the in-graph class-id range test and the NaN ``poison`` of bad rows
                    (``losses.base.FaceLoss.class_labels``, ``poison``) — replaced by a cast
    nan_guard       the ``callbacks.nan_guard`` callback (in skip mode, its optimizer wrapper too)
    metrics         ``compute_metrics``: the step's logs (the loss log's read-out)
    loss_tracking   the running mean behind the ``loss`` log (Keras's ``_loss_tracker.update_state``)
    callbacks       every callback of the job: checkpoint, NaN guard, Throughput, metrics.json, loggers
    row_update      Partial FC's own row update (TensorFlow; ``head_owns_update``): the head's
                    centres are then a plain variable, updated whole by the Keras optimizer

Each is a measurement device only: the switched-off step trains differently (no
guarantee on labels, no loss log, ...). Patches of library code are applied only
around the variant's own ``fit`` calls (where its step is traced), and undone after.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from dataclasses import dataclass
from typing import Callable

from omegaconf import OmegaConf


@dataclass(frozen=True)
class Switch:
    name: str
    what: str
    edit_config: Callable = lambda cfg: None          # cfg (a copy, not in struct mode) → changed
    during_build: Callable = contextlib.nullcontext   # () → context around build_job
    after_build: Callable = lambda loop: None          # loop → changed instance
    during_run: Callable = contextlib.nullcontext     # () → context around each fit
    extras: bool = True                                # keep Throughput, metrics.json, loggers
    problem: Callable = lambda cfg, loop: None        # why it does not apply here, or None


@contextlib.contextmanager
def _patched(*targets):
    """Set ``(owner, attribute, value)`` for the block; restore afterwards."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]
    try:
        for owner, name, value in targets:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def _without_label_checks():
    import sys

    from keras import ops

    import losses.base

    def class_labels(self, y_true, num_classes):
        labels = self.label_vector(y_true)
        return ops.cast(labels, "int32"), ops.ones(ops.shape(labels), "bool")

    def no_poison(values, valid):
        return values

    # every module that imported ``poison`` by name (losses, heads) gets the no-op
    users = [module for module in list(sys.modules.values())
             if getattr(module, "poison", None) is losses.base.poison]
    return _patched((losses.base.FaceLoss, "class_labels", class_labels),
                    *((module, "poison", no_poison) for module in users))


def _drop_nan_guard(cfg):
    if (cfg.get("callbacks") or {}).get("nan_guard") is not None:
        cfg.callbacks.nan_guard = None


def _no_metrics(loop):
    import keras

    # A constant log: Keras's TensorFlow step cannot return no outputs at all.
    loop.compute_metrics = lambda *args, **kwargs: {"loss": keras.ops.zeros((), "float32")}


def _no_loss_tracking(loop):
    loop._loss_tracker.update_state = lambda *args, **kwargs: None


def _drop_callbacks(cfg):
    cfg.callbacks = {}


def _head_updated_by_keras():
    from models.heads.partial_fc import PartialFCHead

    original = PartialFCHead.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.owns_update = False

    # the registry and Keras's Operation.__new__ read the constructor's parameters from it
    functools.update_wrapper(init, original)
    init.__signature__ = inspect.signature(original)

    return _patched((PartialFCHead, "__init__", init))


def _no_nan_guard_configured(cfg, loop):
    return None if (cfg.get("callbacks") or {}).get("nan_guard") is not None else "no NaN guard in this job"


def _no_callbacks_configured(cfg, loop):
    return None if cfg.bench.callbacks == "job" else "bench.callbacks=none: the full step has none"


def _no_row_update(cfg, loop):
    return None if getattr(loop, "head_owns_update", False) else \
        "the head does not update its own rows here (Partial FC under TensorFlow only)"


SWITCHES = (
    # patched while building too: a loop may trace its step when it is built
    Switch("label_checks", "label checks (class-id range test, NaN poison)", during_run=_without_label_checks,
           during_build=_without_label_checks),
    Switch("nan_guard", "NaN guard callback", edit_config=_drop_nan_guard, problem=_no_nan_guard_configured),
    Switch("metrics", "metrics (compute_metrics: the step's logs)", after_build=_no_metrics),
    Switch("loss_tracking", "loss-state tracking (running mean of the loss log)", after_build=_no_loss_tracking),
    Switch("callbacks", "all callbacks (job's, Throughput, metrics.json, loggers)",
           edit_config=_drop_callbacks, extras=False, problem=_no_callbacks_configured),
    Switch("row_update", "Partial FC's own row update (Keras updates the whole matrix)",
           during_build=_head_updated_by_keras, problem=_no_row_update),
)


def switched_config(cfg, switch: Switch):
    """A copy of ``cfg`` with ``switch``'s config edit applied."""
    edited = copy.deepcopy(cfg)
    OmegaConf.set_struct(edited, False)
    switch.edit_config(edited)
    return edited
