"""``python -m trainer.list [kind] [pattern]``: what is registered, with wildcards.

    python -m trainer.list                 # every kind and its components
    python -m trainer.list loss '*face*'   # margin losses with "face" in the name
"""

from __future__ import annotations

import inspect
import sys


def summary(target) -> str:
    doc = inspect.getdoc(target) or ""
    return doc.splitlines()[0] if doc else ""


def main(argv=None) -> int:
    from trainer.commands.cli import start_command

    argv = sys.argv[1:] if argv is None else argv
    if start_command(argv, __doc__):
        return 0
    from trainer.registry import REGISTRIES, ConfigError, registry

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
            try:
                line = summary(REGISTRIES[kind].get(name)) if len(kinds) == 1 else ""
            except ConfigError as error:  # a broken plugin: say which, list the rest
                line = f"(cannot be loaded: {error})"
            print(f"  {name:<24} {line}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
