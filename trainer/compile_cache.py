"""Compiled programs kept on disk across runs (``runtime.compile_cache``), so that the
second run of the same config compiles nothing.

``runtime.compile_cache``:

    auto   <XDG_CACHE_HOME or ~/.cache>/facetrain/compile/<backend>-<machine>
    PATH   that folder
    null   off (also: false, "")

JAX: its persistent compilation cache, with the minimum compile time and entry size
at their lowest so that the small programs of a CPU job are kept too (JAX's defaults
keep only programs that took over a second to compile). JAX opens the folder at its
first compilation after the folder is set.

TensorFlow: XLA's persistent cache for ``jit_compile`` functions
(``TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=...``). TensorFlow reads its XLA
flags once, when it first lists or creates its devices, so the flag only takes
effect when it is in the environment before that: ``tensorflow_environment()`` is
what a process calls before it imports TensorFlow. ``enable`` under TensorFlow sets
it too, and says whether it came in time.

The folder's name carries a fingerprint of the machine (CPU model and instruction-set
flags): XLA:CPU programs are compiled for the host's CPU, and a home folder shared
by machines of another CPU must not hand them a program they cannot run.

The cache is trusted code: never point it at a folder other people can write to.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys

TF_FLAG = "--tf_xla_persistent_cache_directory"
OFF = (None, False, "", "null", "none", "off", "false")


def cache_root() -> str:
    """The user's cache folder for facetrain's compiled programs."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "facetrain", "compile")


def machine_fingerprint() -> str:
    """A short hash of what decides whether an XLA:CPU program runs here: CPU model and flags."""
    parts = [platform.machine()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    parts.append(line.split(":", 1)[1].strip())
                if len(parts) >= 3:
                    break
    except OSError:
        parts.append(platform.processor())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def cache_dir(setting, backend: str) -> str | None:
    """The folder ``runtime.compile_cache=setting`` names for ``backend``, or None when off."""
    if isinstance(setting, str):
        setting = setting.strip()
    if setting in OFF or (isinstance(setting, str) and setting.lower() in OFF):
        return None
    if setting in (True, "auto"):
        return os.path.join(cache_root(), f"{backend}-{machine_fingerprint()}")
    return os.path.expanduser(str(setting))


def entries(folder: str | None) -> list[str]:
    """The files in a cache folder (what a second run must not add to), sorted."""
    if not folder or not os.path.isdir(folder):
        return []
    found = []
    for root, _, files in os.walk(folder):
        found.extend(os.path.relpath(os.path.join(root, name), folder) for name in files)
    return sorted(found)


def enable(setting, backend: str) -> dict:
    """Point ``backend``'s compiler at the cache folder; what was done, for the run's records."""
    folder = cache_dir(setting, backend)
    if folder is None:
        return {"directory": None, "active": False, "reason": "runtime.compile_cache is off"}
    os.makedirs(folder, exist_ok=True)
    if backend == "jax":
        return _enable_jax(folder)
    if backend == "tensorflow":
        return _enable_tensorflow(folder)
    return {"directory": folder, "active": False, "reason": f"no persistent cache for the {backend} backend"}


def _enable_jax(folder: str) -> dict:
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", folder)
    # A CPU job's programs compile in well under JAX's default threshold of 1 s, and are
    # small (-1: no minimum size; 0 would mean JAX's own default minimum).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if previous and previous != folder:
        # JAX opens its cache folder once, at the first compilation after it is set; an
        # earlier job in this process (tests, notebooks) opened another one.
        compilation_cache.reset_cache()
    return {"directory": folder, "active": True, "reason": "jax persistent compilation cache"}


def _enable_tensorflow(folder: str) -> dict:
    existing = _folder_in_environment()
    if existing is not None:  # set before TensorFlow started (by the user or at start-up)
        return {"directory": existing, "active": True, "reason": "XLA persistent cache (TF_XLA_FLAGS)"}
    if "tensorflow" in sys.modules:  # its flags are most likely read already: say so, change nothing
        return {"directory": folder, "active": False,
                "reason": f"TensorFlow had started before {TF_FLAG} was set; set TF_XLA_FLAGS before "
                          "importing TensorFlow (trainer.compile_cache.tensorflow_environment)"}
    tensorflow_environment(folder)
    return {"directory": folder, "active": True, "reason": "XLA persistent cache (TF_XLA_FLAGS)"}


def tensorflow_environment(folder: str | None = None) -> str | None:
    """Add the persistent-cache flag to ``TF_XLA_FLAGS`` (unless one is there); call it before
    TensorFlow is imported. ``folder``: default the ``auto`` folder. Returns the folder in effect."""
    existing = _folder_in_environment()
    if existing is not None:
        return existing  # the user's own choice stands
    flags = os.environ.get("TF_XLA_FLAGS", "")
    folder = folder or cache_dir("auto", "tensorflow")
    os.makedirs(folder, exist_ok=True)
    os.environ["TF_XLA_FLAGS"] = f"{flags} {TF_FLAG}={folder}".strip()
    return folder


def _folder_in_environment() -> str | None:
    for flag in os.environ.get("TF_XLA_FLAGS", "").split():
        if flag.startswith(TF_FLAG + "="):
            return flag.split("=", 1)[1]
    return None
