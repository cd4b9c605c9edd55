"""Fault injection for the commands: run one as a user would, break something, check the contract.

The contract (README: When things go wrong): a failure is one line on stderr and an exit status
(2 a mistake, 1 a bug naming its log, 130/143 an interruption), never a traceback on the console;
``metrics.json`` says what happened; a checkpoint that was saved is still there.

The injections:

* ``full_disk(size)`` / ``read_only(folder)``: a real tmpfs (the kernel's own ENOSPC and EROFS,
  which h5py and TensorFlow's C++ writers hit too); where mounting is not allowed (not root, a
  container without CAP_SYS_ADMIN) the test is skipped, since a patched ``os.write`` would miss
  the C++ writers, which are the cases that broke;
* ``flip_byte(path, offset, value)``: one corrupt byte in any file a command reads;
* broken Python on the import path (``user_module``) for dotted component paths;
* signals are in ``test_interrupts.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXIT_BUG, EXIT_MISTAKE = 1, 2


def run_command(module: str, *args: str, cwd, timeout: int = 600, env: dict | None = None):
    """``python -m <module> args...`` from ``cwd``; returns the CompletedProcess (text)."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, str(cwd)]), "FACETRAIN_DEBUG": "",
                   **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=environment)


def console_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_contract(result, status: int, contains: str = "") -> str:
    """The failure is one ``error:`` line (or the interruption's line) with ``status``; returns it."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert result.returncode == status, (result.returncode, result.stderr[-3000:])
    errors = [line for line in console_lines(result) if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert contains in errors[0], errors[0]
    if status == EXIT_BUG:
        assert "the full traceback is in" in errors[0]
    return errors[0]


def run_status(run_dir) -> str | None:
    """What ``metrics.json`` says (None when it is missing); it must always be JSON."""
    path = os.path.join(str(run_dir), "metrics.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["status"]


def assert_true_status(run_dir, result) -> None:
    """A run that failed never says running or finished; one that succeeded says finished."""
    status = run_status(run_dir)
    if result.returncode == 0:
        assert status == "finished", status
    elif status is not None:
        assert status != "finished" and status != "running", status


@contextlib.contextmanager
def tmpfs(folder, size: str = "4m", read_only: bool = False):
    """A tmpfs of ``size`` mounted at ``folder`` (remounted read-only when asked); skips where mounting is refused."""
    os.makedirs(folder, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()[:80]})")
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
        yield str(folder)
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def full_disk(folder, size: str = "3m"):
    """A small file system that fills up during the command (ENOSPC from the kernel)."""
    return tmpfs(folder, size)


def read_only(folder):
    """A file system mounted read-only (EROFS from the kernel, which root cannot bypass)."""
    return tmpfs(folder, "1m", read_only=True)


def flip_byte(path, offset: int, value: int) -> None:
    """Overwrite one byte of ``path`` (``offset`` taken modulo its size)."""
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(offset % size)
        f.write(bytes([value % 256]))


def user_module(folder, source: str) -> str:
    """A module named uniquely in ``folder`` (on the import path of commands run there); its name."""
    name = f"user_{uuid.uuid4().hex[:8]}"
    with open(os.path.join(str(folder), f"{name}.py"), "w") as f:
        f.write(source)
    return name
