"""One writer per run directory, and what a rerun of a finished run does.

A job takes an exclusive lock on its run directory (``.lock``, an ``flock`` the
kernel releases when the process dies, so a killed job never leaves a stale
lock) before it writes anything, and holds it to the end. A second command on
the same folder gets one line naming the folder and the process holding it.
With the lock held, temporary files left by killed saves (``.tmp-*``) are
removed: nobody else can be writing them.

Object stores (``gs://``) have no locks; there the scheduler must run one job
per run directory (docs/runtime.md).
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time

from trainer.registry import ConfigError

LOCK_FILE = ".lock"
TEMPORARY_PREFIX = ".tmp-"
SCRATCH_FOLDERS = ("", "checkpoints", "export")  # where atomic writes leave temporaries


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived outside ``fit`` (where the checkpoint callback saves first)."""


_TERMINATED = threading.Event()


def raise_on_sigterm(signum, frame):
    # Also remembered, and not raised inside a garbage-collection callback (JAX registers one):
    # Python prints such an exception as "ignored" and drops it. The job checks the flag at
    # each stage boundary instead.
    _TERMINATED.set()
    if not _inside_gc_callback(frame):
        raise Terminated("SIGTERM")


def _inside_gc_callback(frame) -> bool:
    import gc

    codes = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def raise_if_terminated() -> None:
    """At a stage boundary: stop with ``Terminated`` if a SIGTERM was swallowed on its way."""
    if _TERMINATED.is_set():
        raise Terminated("SIGTERM")


def interrupt_on_sigterm() -> None:
    """From now on SIGTERM interrupts the job like Ctrl-C, so every exit records its status."""
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_on_sigterm)


class RunDirectoryBusy(ConfigError):
    """Another process holds the run directory."""


class RunLock:
    """The exclusive lock of a local run directory, held from ``acquire`` to ``release``."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        self._handle = None

    def acquire(self) -> "RunLock":
        os.makedirs(self.run_dir, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunDirectoryBusy(f"{self.run_dir} is in use by {holder}; wait for it to finish, "
                                   "or give this run its own folder (run.name=...)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the flock
            self._handle = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def remove_leftover_temporaries(run_dir: str) -> list[str]:
    """Delete ``.tmp-*`` files of interrupted atomic writes (call only with the lock held)."""
    removed = []
    for sub in SCRATCH_FOLDERS:
        folder = os.path.join(run_dir, sub)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if name.startswith(TEMPORARY_PREFIX) and os.path.isfile(path):
                os.remove(path)
                removed.append(path)
    return removed


def check_writable(run_dir: str) -> None:
    """One line when the run folder cannot be created or written (before any work)."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, f"{TEMPORARY_PREFIX}write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ConfigError(f"cannot write the run folder {run_dir} ({error.strerror}); choose a writable "
                          "place with run.dir=... or fix its permissions") from None
