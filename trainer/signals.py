"""SIGTERM and SIGINT (Ctrl-C), handled one way for the whole job.

The first signal is remembered. Inside ``fit`` (``deferred``) nothing is raised:
the runner's ``StopAtSignal`` callback (``trainer.run``) ends training at the next
step boundary, where the state is whole, and the runner saves it there. Anywhere
else the signal raises ``Interrupted`` at once (start-up, evaluation, export), and
the stage boundaries of the run raise it too (``raise_if_pending``), for a signal
that could not be raised where it landed. The run then records status
``interrupted``, prints one line saying what was saved and how to resume, and
exits 143 (SIGTERM, what schedulers expect of a terminated job) or 130 (SIGINT).

A second signal exits at once with the same code, after one line: a person
pressing Ctrl-C twice wants the process gone, not a save.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

HANDLED = (signal.SIGTERM, signal.SIGINT)
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}  # 128 + the signal's number
NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}


class Interrupted(KeyboardInterrupt):
    """A signal stopped the job; ``exit_code`` is what the process should end with."""

    def __init__(self, signum: int, message: str | None = None):
        super().__init__(message or f"interrupted ({NAMES[signum]})")
        self.signum = signum
        self.exit_code = EXIT_CODES[signum]
        self.name = NAMES[signum]


class _State:
    pending: int | None = None  # the first signal received, not yet acted on
    deferred = 0                # > 0 inside fit: only remember; the step's end stops training
    on_exit_now = None          # called before a second signal ends the process (records the status)


def pending() -> int | None:
    return _State.pending


def remember(signum: int) -> None:
    """Take on a signal another process of the same job received (``trainer.processes``), as if it came here."""
    if _State.pending is None:
        _State.pending = int(signum)


def raise_if_pending() -> None:
    """At a stage boundary: stop with ``Interrupted`` if a signal arrived on the way."""
    if _State.pending is not None:
        raise Interrupted(_State.pending)


@contextlib.contextmanager
def handling(on_exit_now=None):
    """SIGTERM and SIGINT handled as this module says, inside the block (main thread only).

    Nested blocks keep the outer block's pending signal; the outermost starts clean and
    puts the previous handlers back at its end (a notebook's Ctrl-C is Python's again).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in HANDLED}
    outermost = not any(handler is _on_signal for handler in previous.values())
    if outermost:
        _State.pending = None
    before = _State.on_exit_now
    if on_exit_now is not None:
        _State.on_exit_now = on_exit_now
    for signum in HANDLED:
        signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        _State.on_exit_now = before
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def deferred():
    """Inside ``fit``: a signal is only remembered; ``trainer.run.StopAtSignal`` acts at the step's end."""
    _State.deferred += 1
    try:
        yield
    finally:
        _State.deferred -= 1


def _on_signal(signum, frame):
    if _State.pending is not None:
        _exit_now(signum)
    _State.pending = signum
    # Not raised inside fit (the step finishes and is saved), nor inside a garbage-collection
    # callback (JAX registers one): Python prints an exception raised there as "ignored" and
    # drops it. The next stage boundary raises it instead.
    if not _State.deferred and not _inside_gc_callback(frame):
        raise Interrupted(signum)


def _exit_now(signum) -> None:
    try:
        if _State.on_exit_now is not None:
            _State.on_exit_now()
    finally:
        print(f"interrupted again ({NAMES[signum]}): exiting now; the checkpoints saved before stay, "
              "rerun the same command to resume", file=sys.stderr, flush=True)
        os._exit(EXIT_CODES[signum])


def _inside_gc_callback(frame) -> bool:
    import gc

    codes = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False
