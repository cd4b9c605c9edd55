"""What the built-in components declare, known without importing Keras.

Checking ``loss.margin=x`` or listing the losses needs each component's name, parameters and
one-line summary, but the component modules import Keras (and with it TensorFlow, 10 s). This
index holds exactly those declarations. It is made by importing every built-in component module
once, in a child process (``trainer/index_components.py``; the asking process stays free of
TensorFlow), and kept in the user's
cache keyed by the size and modification time of every file in the built-in packages: editing a
component makes the next command rebuild it, so it never disagrees with the code.

Plugins (entry points) and dotted paths are not indexed: they are imported when used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys

FORMAT = 4  # bump when the entry layout changes


def package_files(modules) -> list[str]:
    """Every ``.py`` file of the built-in component packages (found without importing them)."""
    files = []
    for name in modules:
        spec = importlib.util.find_spec(name)  # imports the parents only (docstring-only __init__s)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            for folder in spec.submodule_search_locations:
                for root, dirs, names in os.walk(folder):
                    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                    files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
        elif spec.origin:
            files.append(spec.origin)
    return files


def fingerprint(modules) -> str:
    """Changes whenever a built-in component file (or the interpreter) changes."""
    digest = hashlib.sha1(f"{FORMAT}\0{sys.executable}\0{sys.version}".encode())
    for path in package_files(modules):
        try:
            status = os.stat(path)
        except OSError:
            continue
        digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def cache_folder() -> str:
    root = os.environ.get("FACETRAIN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "facetrain")
    return os.path.join(root, "components")


def load(modules) -> dict | None:
    """The index for the current code: from the cache, else made in a child process.

    None when it cannot be made (a component module fails to import): the registry then
    imports the modules itself, so the failure is reported where it happens.
    """
    path = os.path.join(cache_folder(), f"{fingerprint(modules)}.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    try:
        done = subprocess.run([sys.executable, "-m", "trainer.index_components", path],
                              env=environment, capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
