"""``python -m trainer.index_components <path>``: write the built-in components' declarations.

Run by ``trainer/component_index.py`` in a child process when the component files changed: it
imports every built-in component module (and so Keras) so that the asking process need not.
"""

from __future__ import annotations

import json
import os
import sys

from trainer.registry import REGISTRIES, declaration, import_package


def write(path: str) -> None:
    """Import every built-in component module and write the declarations to ``path``."""
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
