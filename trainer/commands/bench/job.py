"""The whole job in a child process, for what only the job itself can tell: its peak host memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from trainer.commands.bench.memory import gib


def measure_job(overrides: list[str], timeout: float = 3600) -> dict:
    """Run ``python -m trainer <overrides>`` into a temporary run folder; peak RSS, wall time, speed."""
    folder = tempfile.mkdtemp(prefix="facetrain-bench-job-")
    run_dir = os.path.join(folder, "run")
    command = [sys.executable, "-m", "trainer", *overrides, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    with open(os.path.join(folder, "output.txt"), "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _, status, usage, high_water = _wait4(process, timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    wall = time.perf_counter() - start
    metrics = {}
    try:
        with open(os.path.join(run_dir, "metrics.json")) as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        pass
    return {"command": " ".join(["python -m trainer", *overrides]),
            "exit_code": os.waitstatus_to_exitcode(status),
            # VmHWM of the job's own address space; ru_maxrss of a child on Linux also counts
            # the parent's resident set at fork time, so it is only an upper bound
            "peak_host_gib": gib(high_water) if high_water else gib(usage.ru_maxrss * 1024),
            "peak_host_gib_rusage_upper_bound": gib(usage.ru_maxrss * 1024),
            "wall_seconds": round(wall, 1),
            "images_per_second": metrics.get("images_per_second"),
            "status": metrics.get("status"),
            "log": os.path.join(folder, "output.txt")}


def _wait4(process, timeout):
    """``os.wait4`` for one child, polling its peak resident set (``VmHWM``) while it runs."""
    deadline = time.monotonic() + timeout
    high_water = 0
    while True:
        high_water = max(high_water, _vm_hwm(process.pid))
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return pid, status, usage, high_water
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(process.args, timeout)
        time.sleep(0.2)


def _vm_hwm(pid: int) -> int:
    """Peak resident bytes of a running process's current address space (Linux), else 0."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
