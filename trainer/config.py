"""Hydra composition and the checks that run before any data is read.

``compose`` gives the config exactly as the command line builds it; ``preflight``
turns Hydra's multi-line composition errors into one line with the right spelling;
``validate`` checks every component node against its registry.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import re
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from trainer.registry import REGISTRIES, ConfigError, did_you_mean, split_node

CONFIG_MODULE = "conf"
PLUGIN_CONFIG_GROUP = "facetrain.conf"  # entry points naming packages that hold extra YAML

# Config groups whose selected node is one registered component.
COMPONENT_GROUPS = {
    "data": "dataset",
    "preprocess": "preprocess",
    "backbone": "backbone",
    "neck": "neck",
    "head": "head",
    "loss": "loss",
    "loop": "loop",
    "optimizer": "optimizer",
    "schedule": "schedule",
    "eval": "evaluator",
}
# Values the framework fills in at run time; a node never has to state them.
RUNTIME_VALUES = {
    "dataset": {"split"},
    "backbone": {"input_shape"},
    "head": {"num_classes"},
    "loss": {"num_classes"},
    "loop": {"embedding_model", "head", "loss", "num_classes", "config"},
    "schedule": {"base_lr", "steps_per_epoch", "total_steps"},
    "optimizer": {"learning_rate"},
    "evaluator": set(),
}


def _run_dir_name(name, override_dirname) -> str:
    """The run folder: the given name, else one derived from the overrides.

    Deriving it from the command makes "rerun the same command" resume the
    same run; a folder holding a finished run is never reused (suffix -2, -3 ...).
    """
    import json
    import os

    if name:
        return str(name)
    base = re.sub(r"[^A-Za-z0-9_.=,+-]", "_", str(override_dirname or "")) or "default"
    if len(base) > 80:
        base = base[:60] + "-" + hashlib.sha1(base.encode()).hexdigest()[:8]
    candidate, n = base, 1
    while True:
        metrics = os.path.join("runs", candidate, "metrics.json")
        try:
            with open(metrics) as f:
                finished = json.load(f).get("status") == "finished"
        except (OSError, ValueError):
            finished = False
        if not finished:
            return candidate
        n += 1
        candidate = f"{base}-{n}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_dir_name"):
        OmegaConf.register_new_resolver("run_dir_name", _run_dir_name, use_cache=False)


def plugin_search_paths() -> list[str]:
    """``pkg://`` paths of plugin packages that ship their own ``conf/<group>/*.yaml``."""
    return [f"pkg://{ep.value}" for ep in importlib.metadata.entry_points(group=PLUGIN_CONFIG_GROUP)]


def searchpath_override() -> list[str]:
    paths = plugin_search_paths()
    return [f"hydra.searchpath=[{','.join(paths)}]"] if paths else []


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """The resolved config for ``overrides`` (no Hydra run needed), validated.

    A composition error is diagnosed by ``preflight`` into one line that names
    the mistake and the nearest right spelling.
    """
    register_resolvers()
    overrides = list(overrides)
    try:
        cfg = _hydra_compose(overrides, config_name)
    except ConfigError:
        preflight(overrides)  # raises the precise message when it can tell what is wrong
        raise
    validate(cfg)
    return cfg


def _hydra_compose(overrides: Sequence[str], config_name: str = "config") -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        try:
            return hydra_compose(config_name=config_name,
                                 overrides=list(overrides) + searchpath_override())
        except Exception as error:  # Hydra's own message, reduced to its first line
            raise ConfigError(_first_line(error)) from error


# -- preflight: one clear line for the usual command-line mistakes ------------

def group_options(group: str) -> list[str]:
    """The YAML options of a config group, built-in and from plugins."""
    options: set[str] = set()
    roots = [importlib.resources.files(CONFIG_MODULE)]
    for ep in importlib.metadata.entry_points(group=PLUGIN_CONFIG_GROUP):
        try:
            roots.append(importlib.resources.files(ep.value))
        except ModuleNotFoundError:
            continue
    for root in roots:
        folder = root.joinpath(*group.split("/"))
        if folder.is_dir():
            options.update(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    return sorted(options)


def config_groups() -> list[str]:
    root = importlib.resources.files(CONFIG_MODULE)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))


def preflight(overrides: Sequence[str]) -> None:
    """Check ``group=option`` choices and ``group.key=value`` keys before composing."""
    groups = config_groups()
    selections = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or key.startswith(("hydra", "~")) or "," in value:
            continue
        key = key.lstrip("+")
        if "." not in key and "/" not in key and key not in ("trainer", "run") and not override.startswith("+"):
            if key not in groups:
                continue  # a top-level value; Hydra's struct check reports it below
            if value not in ("null", "") and value not in group_options(key):
                raise ConfigError(
                    f"unknown {key} '{value}': {did_you_mean(value, group_options(key))} "
                    f"(list them: python -m trainer.list {key})")
            selections.append(override)

    register_resolvers()
    base = _hydra_compose(selections)
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep or key.startswith(("+", "~", "hydra")) or "." not in key:
            continue
        parent_path, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(base, parent_path)
        if isinstance(parent, DictConfig) and leaf not in parent:
            group = parent_path.split(".")[0]
            hint = did_you_mean(leaf, list(parent.keys()) + _component_parameters(group, parent))
            raise ConfigError(f"{key}: '{leaf}' is not a key of {parent_path}: {hint} "
                              f"(to add a new key on purpose: +{override})")
        if parent is None and parent_path.split(".")[0] in base:
            raise ConfigError(f"{key}: '{parent_path}' does not exist in the config")


def _component_parameters(group: str, node: DictConfig) -> list[str]:
    kind = COMPONENT_GROUPS.get(group)
    if kind is None or "name" not in node:
        return []
    from trainer.registry import accepted_parameters

    try:
        params, _, _ = accepted_parameters(REGISTRIES[kind].get(node.name))
    except ConfigError:
        return []
    return sorted(params)


def validate(cfg: DictConfig) -> None:
    """Check every component node against its registry; nothing is built or read."""
    for group, kind in COMPONENT_GROUPS.items():
        node = cfg.get(group)
        if node is None:
            continue
        try:
            REGISTRIES[kind].check(node, provided=RUNTIME_VALUES.get(kind, ()))
        except ConfigError as error:
            raise ConfigError(f"{group}: {error}") from None
    for key, node in (cfg.get("callbacks") or {}).items():
        if node is not None:
            REGISTRIES["callback"].check(node, provided={"run_dir", "config"})
    for node in (cfg.get("augment") or {}).get("ops", []) or []:
        name, _ = split_node(node, "augment")
        REGISTRIES["augment"].get(name)


def _first_line(error: BaseException) -> str:
    """The first line of the innermost error that says something."""
    while not str(error).strip() and error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip() or type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else text
