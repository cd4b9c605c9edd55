"""Hydra composition and the checks that run before any data is read.

``compose`` gives the config exactly as the command line builds it; ``preflight``
turns Hydra's multi-line composition errors into one line with the right spelling
(and YAML syntax errors into ``file:line:column``); ``validate`` checks the
declared numeric keys against their ranges and every component node against
its registry. All of it runs before any data is read or anything is built.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from trainer.errors import first_line
from trainer.registry import (REGISTRIES, ConfigError, NotANumber, did_you_mean, is_number,
                              split_node, to_plain)

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




@dataclass(frozen=True)
class NumberKey:
    """A top-level numeric key: its type, lower bound and whether ``null`` is allowed."""

    integer: bool
    minimum: float
    strict: bool = False          # True: value > minimum; False: value >= minimum
    nullable: bool = False
    meaning: str = ""
    maximum: float | None = None  # the largest value the code can take (inclusive)

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        bound = f"{'>' if self.strict else '>='} {self.minimum:g}"
        if self.maximum is not None:
            bound = f"in [{self.minimum:g}, {self.maximum:.0f}]" if self.integer else f"{bound} and <= {self.maximum:g}"
        return f"{kind} {bound}" + (" or null" if self.nullable else "") + (
            f" ({self.meaning})" if self.meaning else "")

    def problem(self, value) -> str | None:
        """Why ``value`` is not valid (None: it is)."""
        if value is None:
            return None if self.nullable else "is not set"
        if not is_number(value):
            return "is not a number"
        if not math.isfinite(value):
            return "is not finite"
        if self.integer and value != int(value):
            return "is not a whole number"
        if value < self.minimum or (self.strict and value == self.minimum):
            return "is out of range"
        if self.maximum is not None and value > self.maximum:
            return "is out of range"
        return None


# The top-level numbers a job reads. Each is checked before any data is read; a
# component's own numbers (loss.margin, ...) are checked by its registry.
NUMBER_KEYS = {
    "trainer.epochs": NumberKey(integer=True, minimum=1, meaning="passes over the training set"),
    "trainer.batch_size": NumberKey(integer=True, minimum=1, meaning="the global batch"),
    "trainer.steps_per_epoch": NumberKey(integer=True, minimum=1, nullable=True,
                                         meaning="null: derived from the data set"),
    # NumPy's and TensorFlow's generators take seeds below 2**32
    "trainer.seed": NumberKey(integer=True, minimum=0, maximum=2**32 - 1),
    "optimizer.lr": NumberKey(integer=False, minimum=0, strict=True,
                              meaning="the learning rate for the global batch"),
    "data.image_size": NumberKey(integer=True, minimum=1, meaning="pixels, square"),
}
# Top-level keys that take one of a few words (checked when present).
CHOICE_KEYS = {"trainer.resume_changes": ("refuse", "allow")}
# Keys checked only when present (a data source may take its size from the data).
# The others are required whenever their group is in the config.
OPTIONAL_NUMBER_KEYS = {"data.image_size"}


def run_dir_name(name, override_dirname) -> str:
    """The run folder: the given name, else a readable name plus a short hash of the overrides.

    The readable part is the experiment (``experiment=simclr``), else the options of the changed
    groups (``loss=cosface backbone=iresnet50`` → ``cosface-iresnet50``), else ``run``; the hash
    of every override keeps two commands apart (the overrides themselves are in the run's
    config). Deriving it from the command makes "rerun the same command" find the same run: an
    unfinished one resumes there, a finished one is reported and left unchanged
    (``trainer.run.AlreadyFinished``). No overrides at all: ``default``.
    """
    if name:
        return str(name)
    overrides = str(override_dirname or "")
    if not overrides:
        return "default"
    items = [item.partition("=") for item in re.split(r",(?=[+~]?[A-Za-z_][\w.]*=)", overrides)]
    chosen = {key.lstrip("+~"): value for key, _, value in items if "." not in key}
    readable = chosen.get("experiment") or "-".join(
        value for key, value in chosen.items() if key not in ("run", "trainer", "hydra") and value)
    readable = re.sub(r"[^A-Za-z0-9_.+-]", "_", readable or "run")[:48]
    return f"{readable}-{hashlib.sha1(overrides.encode()).hexdigest()[:6]}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_dir_name"):
        OmegaConf.register_new_resolver("run_dir_name", run_dir_name, use_cache=False)


def plugin_search_paths() -> list[str]:
    """``pkg://`` paths of plugin packages that ship their own ``conf/<group>/*.yaml``."""
    return [f"pkg://{module}" for module in config_plugins()]


_BROKEN_PLUGINS: dict[str, str] = {}


def config_plugins() -> list[str]:
    """The modules of ``facetrain.conf`` plugins that import; each broken one is named once and left out.

    Hydra imports a ``pkg://`` search path on every composition, so one plugin that fails to
    import would break every command; left out, it breaks only what needs its YAML (whose
    option is then unknown, after the line naming the plugin).
    """
    import importlib
    import sys

    modules = []
    for entry_point in importlib.metadata.entry_points(group=PLUGIN_CONFIG_GROUP):
        module = entry_point.value
        if module not in _BROKEN_PLUGINS:
            try:
                importlib.import_module(module)
            except Exception as error:  # noqa: BLE001 - a plugin's own failure, named in one line
                _BROKEN_PLUGINS[module] = f"{type(error).__name__}: {first_line(error)}"
                print(f"warning: the {PLUGIN_CONFIG_GROUP} plugin {entry_point.name} = {module} fails to import "
                      f"({_BROKEN_PLUGINS[module]}); its configs are left out", file=sys.stderr, flush=True)
        if module not in _BROKEN_PLUGINS:
            modules.append(module)
    return list(dict.fromkeys(modules))


def with_searchpath(overrides: Sequence[str], config_dirs: Sequence[str] = ()) -> list[str]:
    """``overrides`` with one ``hydra.searchpath`` holding the user's paths, then plugin paths.

    Hydra reads only the first ``hydra.searchpath`` override, so appending the
    plugins' own would silently drop a user's ``hydra.searchpath=[...]`` (or the
    reverse). ``config_dirs`` (``--config-dir``) go first, as Hydra puts them.
    """
    user: list[str] = [f"file://{os.path.abspath(d)}" for d in config_dirs]
    rest = []
    for override in overrides:
        if override.partition("=")[0].lstrip("+") == "hydra.searchpath":
            user += _searchpath_entries(override)
        else:
            rest.append(override)
    paths = user + [p for p in plugin_search_paths() if p not in user]
    return rest + ([f"hydra.searchpath=[{','.join(paths)}]"] if paths else [])


def _searchpath_entries(override: str) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        value = OverridesParser.create().parse_override(override).value()
    except OverrideParseException as error:
        raise ConfigError(_override_message(error)) from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{override}: hydra.searchpath must be a list of paths, e.g. "
                          "hydra.searchpath=[file:///home/me/conf]")
    return list(value)


def compose(overrides: Sequence[str] = (), config_name: str = "config",
            config_dirs: Sequence[str] = ()) -> DictConfig:
    """The resolved config for ``overrides`` (no Hydra run needed), validated.

    A composition error is diagnosed by ``preflight`` into one line that names
    the mistake and the nearest right spelling. ``config_dirs`` are extra config
    folders, as ``--config-dir`` gives them on the command line.
    """
    register_resolvers()
    overrides = with_searchpath(overrides, config_dirs)
    try:
        cfg = _hydra_compose(overrides, config_name)
    except ConfigError as error:
        if not _syntax_error(error):  # a YAML or override syntax error already says where
            preflight(overrides, config_name)  # the precise message when it can tell what is wrong
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
            return hydra_compose(config_name=config_name, overrides=with_searchpath(overrides))
        except Exception as error:  # Hydra's own message, reduced to one line
            raise ConfigError(hydra_error_line(error)) from error


def hydra_error_line(error: BaseException) -> str:
    """One line for a Hydra composition error: YAML position, override syntax, else its first line."""
    import yaml
    from hydra.errors import OverrideParseException

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, yaml.MarkedYAMLError) and cause.problem_mark is not None:
            return yaml_error_line(cause)
        if isinstance(cause, OverrideParseException):
            return _override_message(cause)
        cause = cause.__cause__ or cause.__context__
    return first_line(error)


def _syntax_error(error: BaseException) -> bool:
    import yaml
    from hydra.errors import OverrideParseException

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, (yaml.MarkedYAMLError, OverrideParseException)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def yaml_error_line(error) -> str:
    """``file:line:column: YAML syntax error: problem (context)``, 1-based as editors count."""
    mark = error.problem_mark
    context = f" ({error.context})" if error.context else ""
    return (f"{mark.name}:{mark.line + 1}:{mark.column + 1}: YAML syntax error: "
            f"{error.problem}{context}")


def _override_message(error) -> str:
    """Hydra's override parser error as one line that says how to quote the value."""
    override = getattr(error, "override", None) or ""
    key, sep, value = override.partition("=")
    if not sep:
        return (f"'{override}' is not key=value: if it is the rest of a value with spaces, quote "
                f"the whole argument, e.g. 'data.path=/my photos/x'")
    hint = value.replace("'", "\\'")
    return (f"{override}: Hydra cannot read this value ({first_line(error)}); quote it, with the "
            f"shell's quotes around Hydra's: \"{key}='{hint}'\"")


# -- preflight: one clear line for the usual command-line mistakes ------------

def group_options(group: str, searchpath: Sequence[str] = ()) -> list[str]:
    """The YAML options of a config group: built-in, from plugins and from ``searchpath``.

    ``searchpath`` holds Hydra search-path entries (``file://dir``, ``pkg://module``),
    as ``--config-dir`` and ``hydra.searchpath`` give them.
    """
    options: set[str] = set()
    for root in config_roots(searchpath):
        folder = root.joinpath(*group.split("/"))
        if folder.is_dir():
            options.update(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    return sorted(options)


def config_roots(searchpath: Sequence[str] = ()):
    import pathlib

    roots = [importlib.resources.files(CONFIG_MODULE)]
    modules = config_plugins()
    for entry in searchpath:
        if entry.startswith("pkg://"):
            modules.append(entry[len("pkg://"):].replace("/", "."))
        elif entry.startswith("file://"):
            roots.append(pathlib.Path(entry[len("file://"):]))
        else:
            roots.append(pathlib.Path(entry))
    for module in dict.fromkeys(modules):
        try:
            roots.append(importlib.resources.files(module))
        except Exception:  # noqa: BLE001 - a missing or broken package holds no configs
            continue
    return roots


def config_groups(searchpath: Sequence[str] = ()) -> list[str]:
    groups = set()
    for root in config_roots(searchpath):
        if root.is_dir():
            groups.update(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    return sorted(groups)


def preflight(overrides: Sequence[str], config_name: str = "config") -> None:
    """Check ``group=option`` choices and ``group.key=value`` keys before composing."""
    searchpath = [p for o in overrides if o.partition("=")[0].lstrip("+") == "hydra.searchpath"
                  for p in _searchpath_entries(o)]
    groups = config_groups(searchpath)
    selections, top_level = [], []
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or key.startswith(("hydra", "~")) or "," in value:
            continue
        key = key.lstrip("+")
        if "." not in key and "/" not in key and key not in ("trainer", "run") and not override.startswith("+"):
            if key not in groups:
                top_level.append(key)  # a top-level value: checked against the config below
                continue
            options = group_options(key, searchpath)
            if value not in ("null", "") and value not in options:
                raise ConfigError(
                    f"unknown {key} '{value}': {did_you_mean(value, options)} "
                    f"(list them: python -m trainer.list {key})")
            selections.append(override)

    register_resolvers()
    base = _hydra_compose(selections + [o for o in overrides if o.startswith("hydra.searchpath")],
                          config_name)
    for key in top_level:
        if key not in base:
            choices = [k for k in base.keys() if k != "hydra"] + [g for g in groups if g in base]
            raise ConfigError(f"{key}: '{key}' is not a key of this command: {did_you_mean(key, choices)} "
                              f"(--help lists them)")
    for override in overrides:
        key, sep, _ = override.partition("=")
        deletion = key.startswith("~")
        key = key.lstrip("~")
        if key.startswith(("+", "hydra")) or "." not in key or not (sep or deletion):
            continue
        parent_path, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(base, parent_path)
        if isinstance(parent, DictConfig) and leaf not in parent:
            group = parent_path.split(".")[0]
            hint = did_you_mean(leaf, list(parent.keys()) + _component_parameters(group, parent))
            if deletion:  # Hydra's ``~key`` removes a key; a missing one is a misspelling
                raise ConfigError(f"{override}: '{leaf}' is not a key of {parent_path}, so there "
                                  f"is nothing to delete: {hint}")
            raise ConfigError(f"{key}: '{leaf}' is not a key of {parent_path}: {hint} "
                              f"(to add a new key on purpose: +{override})")
        if parent is None and parent_path.split(".")[0] in base:
            raise ConfigError(f"{key}: '{parent_path}' does not exist in the config")


def _component_parameters(group: str, node: DictConfig) -> list[str]:
    kind = COMPONENT_GROUPS.get(group)
    if kind is None or "name" not in node:
        return []
    try:
        return list(REGISTRIES[kind].declaration(node.name)["parameters"])
    except ConfigError:
        return []


def validate(cfg: DictConfig) -> None:
    """Check interpolations, numbers, component nodes and the image size; nothing is built or read."""
    check_interpolations(cfg)
    check_numbers(cfg)
    check_choices(cfg)
    for group, kind in COMPONENT_GROUPS.items():
        node = cfg.get(group)
        if node is None:
            continue
        _check_node(kind, node, group, RUNTIME_VALUES.get(kind, ()))
    for key, node in (cfg.get("callbacks") or {}).items():
        if node is not None:
            _check_node("callback", node, f"callbacks.{key}", {"run_dir", "config"})
    _check_augment(cfg.get("augment"))
    check_image_size(cfg)
    check_batch_memory(cfg)


def _check_node(kind: str, node, where: str, provided=()) -> None:
    try:
        REGISTRIES[kind].verify(node, provided=provided, where=where)
    except NotANumber:
        raise  # already names the key's full path
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def check_interpolations(cfg: DictConfig) -> None:
    """Every ``${...}`` outside ``hydra`` resolves now (``${oc.env:UNSET}``), or one line names the key.

    A value left to fill (``???``), or one pointing at it, is a command's own business (it says
    which key to pass), so only interpolations that cannot resolve at all are refused here.
    """
    from omegaconf.errors import (InterpolationResolutionError, InterpolationToMissingValueError,
                                  MissingMandatoryValue)

    for key in cfg:
        if key == "hydra":
            continue
        try:
            value = cfg[key]  # in the whole config: ``input: ${photos}`` points at a sibling
            if isinstance(value, DictConfig):
                OmegaConf.to_container(value, resolve=True)
        except (InterpolationToMissingValueError, MissingMandatoryValue):
            continue
        except InterpolationResolutionError as error:
            where = getattr(error, "full_key", None) or key
            # a resolver's own words (oc.env), without OmegaConf's "KeyError raised while resolving ..."
            why = first_line(error).split("raised while resolving interpolation: ", 1)[-1].strip("\"'")
            raise ConfigError(f"{where} cannot be resolved: {why}; set it, or give the interpolation "
                              "a default (${oc.env:NAME,default})") from None


def check_numbers(cfg: DictConfig) -> None:
    """Each declared numeric key is a number of the right kind and range, or one line says not."""
    for key, rule in NUMBER_KEYS.items():
        parent_path, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_path)
        if not isinstance(parent, DictConfig):
            continue  # the group is not in this config (``~optimizer``, a loop without one)
        if leaf not in parent:
            if key in OPTIONAL_NUMBER_KEYS:
                continue
            raise ConfigError(f"{key} is not set: it must be {rule.describe()}; set {key}=...")
        value = parent[leaf]
        problem = rule.problem(value)
        if problem:
            raise ConfigError(f"{key}={value!r} {problem}: {key} must be {rule.describe()}")


def check_choices(cfg: DictConfig) -> None:
    """Each declared word-valued key holds one of its words, or one line says which it may."""
    for key, words in CHOICE_KEYS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and str(value) not in words:
            raise ConfigError(f"{key}={value!r} is not {' or '.join(words)}")


def check_image_size(cfg: DictConfig) -> None:
    """``data.image_size`` against the backbone's smallest input, before any data is read.

    A backbone declares its minimum as a ``minimum_input_size(**params)`` attribute
    (a function of its config, e.g. 2^stages for a strided CNN).
    """
    data, backbone = cfg.get("data"), cfg.get("backbone")
    if data is None or backbone is None or data.get("image_size") is None:
        return
    name, params = split_node(backbone, "backbone")
    try:
        minimum = REGISTRIES["backbone"].minimum_input_size(name, params)
    except (TypeError, ValueError):
        return  # a malformed backbone parameter: the backbone's own check names it when built
    if minimum is None:
        return
    size = data.image_size
    if size < minimum:
        raise ConfigError(
            f"data.image_size={size} is too small for backbone={name}: data.image_size must be "
            f"an integer >= {minimum} for this backbone (set data.image_size={minimum} or more)")


def physical_memory() -> int | None:
    """Bytes of memory this machine has (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_batch_memory(cfg: DictConfig) -> None:
    """One batch of float32 pixels (batch × size² × 3 × 4 bytes) must fit in this machine's memory.

    The model needs many times more than its input, so a batch whose pixels alone exceed the
    memory can never run: said now in one line, not as an out-of-memory error after the data
    is read (``data.image_size=100000`` asked TensorFlow for 120 GB).
    """
    size = OmegaConf.select(cfg, "data.image_size", default=None)
    batch = OmegaConf.select(cfg, "trainer.batch_size", default=None)
    memory = physical_memory()
    if not (is_number(size) and is_number(batch)) or memory is None:
        return
    needed = int(batch) * int(size) ** 2 * 3 * 4
    if needed > memory:
        raise ConfigError(
            f"data.image_size={size} with trainer.batch_size={batch} needs {needed / 2**30:,.0f} GiB for one "
            f"batch of pixels alone, more than this machine's {memory / 2**30:,.0f} GiB; lower data.image_size "
            "(faces are usually 112) or trainer.batch_size")


def _check_augment(node) -> None:
    """Every augmentation op, in ``augment.ops`` and in ``augment.views[i].ops``."""
    if node is None:
        return
    if not isinstance(node, DictConfig):  # a bare list of ops
        node = OmegaConf.create({"ops": node})
    lists = [("augment.ops", node.get("ops"))]
    lists += [(f"augment.views[{i}].ops", view.get("ops") if isinstance(view, DictConfig) else None)
              for i, view in enumerate(node.get("views") or [])]
    for where, ops in lists:
        for index, op in enumerate(ops or []):
            op = to_plain(op)
            if isinstance(op, dict):
                op = dict(op)
                p = op.pop("p", 1.0)  # the pipeline's gate, not the op's parameter
                if not is_number(p) or not 0.0 <= p <= 1.0:
                    raise ConfigError(f"{where}[{index}].p={p!r} must be a number in [0, 1] "
                                      "(the chance each sample gets the op)")
            # the pipeline fills ``seed``; a mixing op's ``p`` is checked above
            _check_node("augment", op, f"{where}[{index}]", {"seed"})
