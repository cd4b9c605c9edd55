"""``python -m trainer.list [kind] [pattern]``: what is registered, with wildcards.

    python -m trainer.list                 # every kind and its components
    python -m trainer.list loss '*face*'   # margin losses with "face" in the name
"""

from __future__ import annotations

import inspect
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def summary(target) -> str:
    doc = inspect.getdoc(target) or ""
    return doc.splitlines()[0] if doc else ""


def main(argv=None) -> int:
    from trainer.registry import REGISTRIES, ConfigError, registry

    argv = sys.argv[1:] if argv is None else argv
    try:
        kinds = [registry(argv[0]).kind] if argv else list(REGISTRIES)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    pattern = argv[1] if len(argv) > 1 else "*"
    for kind in kinds:
        names = REGISTRIES[kind].names(pattern)
        print(f"{kind} ({len(names)})")
        for name in names:
            line = summary(REGISTRIES[kind].get(name)) if len(kinds) == 1 else ""
            print(f"  {name:<24} {line}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
