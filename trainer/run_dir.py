"""One writer per run directory, and what a rerun of a finished run does.

A job takes an exclusive lock on its run directory before it writes anything,
and holds it to the end: an ``flock``, which the kernel releases when the
process dies, so a killed job never leaves a stale lock. It is taken twice:
on ``<run>/.lock`` (any user who can write the folder sees it) and on a file
named after the folder's absolute path in a per-user lock folder outside it
(``lock_folder()``). The second survives the run folder being deleted under a
running job: a second job on the same path is still refused, where a lock held
only on the deleted ``.lock`` would have let it in. (The folder's inode would
not do: deleting and re-creating the folder gives a new one.) A second command
on the same folder gets one line naming the folder and the process holding it.

Temporary files of atomic writes are named ``.tmp-<pid>-...`` by their writer
(``trainer.io``). With the lock held, a job removes those left by killed
processes, and only those: a temporary whose writer is alive is not its own to
delete, even when that writer lost its folder and lock.

Object stores (``gs://``) have no locks; there the scheduler must run one job
per run directory (docs/runtime.md).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import tempfile
import time

from trainer.registry import ConfigError

LOCK_FILE = ".lock"
TEMPORARY_PREFIX = ".tmp-"
SCRATCH_FOLDERS = ("", "checkpoints", "export")  # where atomic writes leave temporaries


class RunDirectoryBusy(ConfigError):
    """Another process holds the run directory."""


def lock_folder() -> str:
    """Where a user's run-folder locks live: outside every run folder, private to the user."""
    folder = os.path.join(tempfile.gettempdir(), f"facetrain-locks-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return folder


class RunLock:
    """The exclusive lock of a local run directory, held from ``acquire`` to ``release``."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        key = hashlib.sha1(os.path.realpath(run_dir).encode()).hexdigest()[:24]
        try:
            self.path_lock = os.path.join(lock_folder(), f"{key}.lock")
        except OSError:  # no writable temporary folder: the run folder's own lock still holds
            self.path_lock = None
        self._handles = []

    def acquire(self) -> "RunLock":
        os.makedirs(self.run_dir, exist_ok=True)
        holder = (f"process {os.getpid()} on {socket.gethostname()} since "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')} ({os.path.realpath(self.run_dir)})")
        try:
            for path in filter(None, (self.path_lock, self.path)):  # the one outside the folder first
                self._handles.append(_locked(path, self.run_dir))
        except RunDirectoryBusy:
            self.release()
            raise
        for handle in self._handles:
            handle.seek(0)
            handle.truncate()
            handle.write(holder + "\n")
            handle.flush()
        return self

    def release(self) -> None:
        for handle in self._handles:
            handle.close()  # closing drops the flock
        self._handles = []

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def _locked(path: str, run_dir: str):
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip().split(" (")[0] or "another process"
        handle.close()
        raise RunDirectoryBusy(f"{run_dir} is in use by {holder}; wait for it to finish, "
                               "or give this run its own folder (run.name=...)") from None
    return handle


def writer_pid(name: str) -> int | None:
    """The writer's process id in a temporary's name (``.tmp-<pid>-...``), or None."""
    pid = name[len(TEMPORARY_PREFIX):].split("-", 1)[0]
    return int(pid) if name.startswith(TEMPORARY_PREFIX) and pid.isdigit() else None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_leftover_temporaries(run_dir: str) -> list[str]:
    """Delete the ``.tmp-<pid>-*`` files of atomic writes whose writer has died (lock held)."""
    removed = []
    for sub in SCRATCH_FOLDERS:
        folder = os.path.join(run_dir, sub)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            pid = writer_pid(name)
            if pid is None or pid == os.getpid() or process_alive(pid) or not os.path.isfile(path):
                continue
            try:
                os.remove(path)
            except FileNotFoundError:  # its writer finished it after all
                continue
            removed.append(path)
    return removed


def check_writable(run_dir: str) -> None:
    """One line when the run folder cannot be created or written (before any work)."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, f"{TEMPORARY_PREFIX}{os.getpid()}-write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ConfigError(f"cannot write the run folder {run_dir} ({error.strerror}); choose a writable "
                          "place with run.dir=... or fix its permissions") from None
