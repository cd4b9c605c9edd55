"""What the built-in components declare, known without importing Keras.

Checking ``loss.margin=x`` or listing the losses needs each component's name, parameters and
one-line summary, but the component modules import Keras (and with it TensorFlow, 10 s). This
index holds exactly those declarations. It is made by importing every built-in component module
once, in a child process (so the asking process stays free of TensorFlow), and kept in the user's
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

FORMAT = 2  # bump when the entry layout changes


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
        done = subprocess.run([sys.executable, "-m", "trainer.component_index", path],
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


def declaration(target) -> dict:
    """One component's declaration, read from the imported object."""
    import inspect

    from trainer.registry import accepted_parameters, typed_parameters

    accepted, required, is_open = accepted_parameters(target)
    doc = inspect.getdoc(target) or ""
    entry = {"module": getattr(target, "__module__", None),
             "summary": doc.splitlines()[0] if doc else "",
             "parameters": sorted(accepted), "required": sorted(required), "open": is_open,
             "typed": {k: list(v) for k, v in typed_parameters(target).items()}}
    rule = getattr(target, "minimum_input_size", None)
    if callable(rule):
        reads = [p.name for p in inspect.signature(rule).parameters.values()
                 if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        # the minimum with no parameter set; a config setting one of ``reads`` asks the rule itself
        entry["minimum_input_size"] = {"value": int(rule()), "reads": reads, **self_contained(rule)}
    return entry


def self_contained(rule) -> dict:
    """``{"function", "source"}`` of a rule that needs nothing but Python's built-ins, else {}.

    Such a rule (``2 ** len(widths)``) can be run from its source without importing its module.
    """
    import builtins
    import inspect
    import textwrap

    code = getattr(rule, "__code__", None)
    if (code is None or rule.__name__ == "<lambda>" or rule.__closure__
            or not set(code.co_names) <= set(dir(builtins))):
        return {}
    try:
        return {"function": rule.__name__, "source": textwrap.dedent(inspect.getsource(rule))}
    except (OSError, TypeError):
        return {}


def write(path: str) -> None:
    """Import every built-in component module and write the declarations to ``path``."""
    from trainer.registry import REGISTRIES, import_package

    index = {}
    for kind, registry in REGISTRIES.items():
        for module in registry.builtin_modules:
            import_package(module)
        index[kind] = {name: declaration(target) for name, target in registry.builtin_entries().items()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1, sort_keys=True)
    os.replace(temporary, path)  # readers see the whole index or none


if __name__ == "__main__":
    write(sys.argv[1])
