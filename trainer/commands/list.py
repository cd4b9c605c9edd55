"""``python -m trainer.list [kind] [pattern]``: every config group and component, with wildcards.

    python -m trainer.list                 # every group (its options, the default marked *) and component
    python -m trainer.list loss '*face*'   # loss options and components with "face" in the name
    python -m trainer.list data            # data sets: the data=... options and the registered sources
    python -m trainer.list kind=loss pattern='*face*'

A group's options are what ``group=option`` selects (``conf/<group>/*.yaml``); its components
are what a node's ``name`` may be (``loss.name=cosface``). Answers without importing TensorFlow.
"""

from __future__ import annotations

import fnmatch
import importlib.resources
import sys

from trainer.commands import edge

COMMAND = "list"


def default_options() -> dict[str, str]:
    """Each group's option in the default job (``conf/config.yaml``'s defaults list)."""
    from omegaconf import OmegaConf

    text = importlib.resources.files("conf").joinpath("config.yaml").read_text(encoding="utf-8")
    defaults = {}
    for item in OmegaConf.create(text).get("defaults", []):
        if isinstance(item, str) or not hasattr(item, "items"):
            continue
        for group, option in item.items():
            defaults[str(group).replace("optional ", "")] = option
    return defaults


def option_summary(group: str, option: str) -> str:
    """The first comment line of ``conf/<group>/<option>.yaml``, without its trailing ``group=option``."""
    from trainer.config import config_roots

    for root in config_roots():
        path = root.joinpath(group, f"{option}.yaml")
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.startswith("#"):
                    text = line.lstrip("# ").strip()
                    return text.replace(f"{group}={option}", "").strip(" .") or text
                if line.strip():
                    break
    return ""


def resolve(kind: str) -> tuple[str | None, str | None]:
    """(config group, registry kind) a word names: ``data`` is the data group and the dataset registry."""
    from trainer.config import COMPONENT_GROUPS, config_groups
    from trainer.registry import REGISTRIES, ConfigError, did_you_mean, registry

    groups = config_groups()
    group = kind if kind in groups else None
    component = COMPONENT_GROUPS.get(kind) or (kind if kind in REGISTRIES else None)
    if group is None and component is None:
        try:
            component = registry(kind).kind  # a plural, e.g. losses
        except ConfigError:
            raise ConfigError(f"unknown group or component kind '{kind}': "
                              f"{did_you_mean(kind, [*groups, *REGISTRIES])}") from None
        group = next((g for g, k in COMPONENT_GROUPS.items() if k == component), None)
        group = group or (component if component in groups else None)
    return group, component


def group_lines(group: str, pattern: str, detailed: bool) -> list[str]:
    from trainer.config import group_options

    default = default_options().get(group)
    options = [o for o in group_options(group) if fnmatch.fnmatch(o, pattern)]
    lines = [f"{group}=<option> ({len(options)}; * the default job's)"]
    for option in options:
        mark = "*" if option == default else " "
        summary = option_summary(group, option) if detailed else ""
        lines.append(f"  {mark} {option:<24} {summary}".rstrip())
    return lines


def component_lines(kind: str, pattern: str, detailed: bool, group: str | None) -> list[str]:
    from trainer.registry import REGISTRIES, ConfigError

    registry = REGISTRIES[kind]
    names = registry.names(pattern)
    where = f"{group}.name=<name>" if group else f"{kind} name"
    lines = [f"{kind} components, {where} ({len(names)})"]
    for name in names:
        try:
            summary = registry.declaration(name).get("summary", "") if detailed else ""
        except ConfigError as error:  # a broken plugin: say which, list the rest
            summary = f"(cannot be loaded: {error})"
        lines.append(f"  - {name:<24} {summary}".rstrip())
    return lines


def listing(kind: str | None, pattern: str) -> list[str]:
    from trainer.config import config_groups, group_options
    from trainer.registry import REGISTRIES

    if kind:
        group, component = resolve(kind)
        lines = group_lines(group, pattern, True) if group else []
        if component:
            lines += component_lines(component, pattern, True, group)
        return lines
    # Everything, one line each: groups with their options (* the default), then components.
    defaults = default_options()
    lines = ["Config groups (group=option; * the default job's; python -m trainer.list <group> for more):"]
    for group in config_groups():
        options = [("*" if o == defaults.get(group) else "") + o
                   for o in group_options(group) if fnmatch.fnmatch(o, pattern)]
        lines.append(f"  - {group}: {', '.join(options)}")
    lines.append("Components (a node's name=...):")
    for component, registry in REGISTRIES.items():
        lines.append(f"  - {component}: {', '.join(registry.names(pattern))}")
    return lines


def bare_words(argv: list[str]) -> list[str]:
    """``list loss '*face*'`` as ``kind=loss pattern=*face*`` (the bare words users type)."""
    words = [a for a in argv if "=" not in a]
    if len(words) > 2:
        return argv  # the parser names the stray word
    named = [f"{key}={word}" for key, word in zip(("kind", "pattern"), words)]
    return named + [a for a in argv if "=" in a]


def run(cfg, argv) -> int:
    print("\n".join(listing(cfg.kind and str(cfg.kind), str(cfg.pattern))))
    return 0


def main(argv=None) -> int:
    return edge.main(COMMAND, __doc__, run, argv, arguments=bare_words)


if __name__ == "__main__":
    sys.exit(main())
