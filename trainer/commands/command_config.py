"""One command-line style for every command: a Hydra primary config, ``key=value`` overrides.

``conf/<command>.yaml`` declares a command's keys and defaults (as ``conf/bench.yaml`` and
``conf/config.yaml`` do); ``parse`` composes it with the command line through
``trainer.config.compose``, so a misspelt key, group or value is the same one ``error:`` line
with a suggestion for every command. ``--help`` is the command's docstring plus its keys, read
from the YAML; ``--version`` is facetrain's version and the installed backends'. None of it
imports TensorFlow, Keras or JAX.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import re
from collections.abc import Iterable, Sequence

HELP_FLAGS = ("-h", "--help")
VERSION_FLAGS = ("--version", "-V")
BACKENDS = ("tensorflow", "keras", "jax", "jaxlib", "torch")
# The spellings of one release ago: an error naming the new key (one line), not a silent rename.
RENAMED_KEYS = {"model_path": "model", "old_model_path": "old_model", "--old": "old_model",
                "--new": "new_model", "--pairs": "pairs"}


def version_text() -> str:
    """``facetrain 0.1.0 (tensorflow 2.21.0, keras 3.15.1, jax 0.10.2)``: read from metadata, nothing imported."""
    def installed(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    backends = [f"{name} {installed(name)}" for name in BACKENDS if installed(name)]
    return f"facetrain {installed('facetrain') or 'unknown'} ({', '.join(backends) or 'no backend installed'})"


def yaml_keys(config_name: str) -> list[tuple[str, str, str]]:
    """(key path, default, comment) for each value line of ``conf/<config_name>.yaml``, in file order.

    Read from the YAML text, so ``--help`` shows the comments written next to the defaults.
    """
    text = importlib.resources.files("conf").joinpath(f"{config_name}.yaml").read_text(encoding="utf-8")
    keys, parents, in_defaults = [], [], False
    for line in text.splitlines():
        match = re.match(r"^(\s*)(-\s+)?([\w@/]+):\s*(.*?)\s*(?:#\s?(.*))?$", line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent, item, key, value, comment = match.groups()
        depth = len(indent) // 2
        if depth == 0:
            in_defaults = key == "defaults"
        if in_defaults and depth == 0:
            continue
        if in_defaults:  # "- data: synthetic_faces": a group and its default option
            if item and key.endswith("@_here_"):  # that option's keys, at the top level
                keys += [row for row in yaml_keys(f"{key[:-len('@_here_')]}/{value}") if row[0] != "name"]
            elif item:
                keys.append((key, value, comment or ""))
            continue
        parents = parents[:depth] + [key]
        if value:
            keys.append((".".join(parents), value, comment or ""))
        elif comment:
            keys.append((".".join(parents), "", comment))
    return keys


def help_text(config_name: str, doc: str | None) -> str:
    """The command's docstring, then every key of its config with its default and comment."""
    rows = yaml_keys(config_name)
    width = max((len(f"{k}={v}") for k, v, _ in rows), default=0)
    lines = [(doc or "").strip(), "",
             f"Keys (key=value; group=option; defaults from conf/{config_name}.yaml):"]
    for key, value, comment in rows:
        text = f"{key}={value}" if value else f"{key}.<key>=..."
        lines.append(f"  {text:<{width + 2}} {comment}".rstrip())
    lines.append("A misspelt key is one error: line (exit status 2). python -m trainer --version: the versions.")
    return "\n".join(lines)


def split_value_problem(overrides: Sequence[str]) -> str | None:
    """A one-line error for a word that is not ``key=value`` (e.g. a value the shell split in two)."""
    for previous, argument in zip([None, *overrides], overrides):
        if "=" in argument or argument.startswith("~"):
            continue
        if argument in RENAMED_KEYS:
            return renamed(argument)
        if previous is not None and "=" in previous:
            return (f"'{argument}' is not key=value: it looks like the rest of "
                    f"{previous.partition('=')[0]}; quote a value with spaces as one argument: "
                    f"'{previous} {argument}'")
        return f"'{argument}' is not key=value (group=option, group.key=value or ~group.key)"
    return None


def renamed(key: str) -> str:
    return (f"{key} is now spelled {RENAMED_KEYS[key]}=... (one key=value style and one spelling "
            "of the models for every command; --help lists the keys)")


def answered(argv: Iterable[str], config_name: str, doc: str | None) -> bool:
    """True when ``--help`` or ``--version`` was asked for, and answered."""
    argv = list(argv)
    if any(a in HELP_FLAGS for a in argv):
        print(help_text(config_name, doc))
        return True
    if any(a in VERSION_FLAGS for a in argv):
        print(version_text())
        return True
    return False


def parse(config_name: str, argv: Iterable[str]):
    """``conf/<config_name>.yaml`` composed with ``argv``'s overrides (validated); a mistake is a ConfigError."""
    from trainer.config import compose
    from trainer.registry import ConfigError

    overrides = list(argv)
    problem = split_value_problem(overrides)
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        if key in RENAMED_KEYS:
            problem = problem or renamed(key)
    if problem:
        raise ConfigError(problem)
    return compose(overrides, config_name=config_name)


def data_overrides(argv: Iterable[str]) -> list[str]:
    """The ``data=...``/``data.<key>=...`` overrides: the data set, composed as training composes it."""
    return [a for a in argv if a.partition("=")[0].lstrip("+~").split(".")[0] == "data"]
