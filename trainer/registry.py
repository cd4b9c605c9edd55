"""Component registries: one per seam, turning config nodes into objects.

A component is registered with a decorator and configured by a node such as
``{"name": "cosface", "margin": 0.35}``. The registry, not the caller:

* imports the built-in modules of its kind itself, so nothing has to be
  imported "for its side effect" before a name can be found;
* discovers plugins through the ``facetrain.<kind>`` entry-point group;
* accepts a dotted path (``keras.layers.RandomFlip``) for outside components;
* checks a node's keys against the constructor before anything is built, and
  fails with one line naming the group, the bad key and the closest ones.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

ENTRY_POINT_PREFIX = "facetrain."


class ConfigError(ValueError):
    """A user mistake in configuration; its message is one line that says how to fix it."""


def closest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The valid spellings nearest to ``word`` (best first)."""
    choices = sorted(set(choices))
    found = difflib.get_close_matches(word, choices, n=n, cutoff=0.5)
    return found or [c for c in choices if c.startswith(word[:2])][:n]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    choices = sorted(set(choices))
    near = closest(word, choices)
    if near:
        return "did you mean " + " or ".join(repr(c) for c in near) + "?"
    return "valid: " + ", ".join(choices[:20]) + ("" if len(choices) <= 20 else ", ...")


def accepted_parameters(target: Callable) -> tuple[set[str], set[str], bool]:
    """(all parameter names, required names, open) of a class or function.

    Classes whose ``__init__`` forwards ``**kwargs`` to a base class collect
    the base class's parameters too (how Keras layers take ``name``/``dtype``);
    ``open`` is True only when no class in the chain closes the keywords.
    """
    params: set[str] = set()
    required: set[str] = set()
    functions = [c.__init__ for c in inspect.getmro(target) if "__init__" in vars(c)] \
        if inspect.isclass(target) else [target]
    for position, function in enumerate(functions):
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return params, required, True
        forwards = False
        for p in list(signature.parameters.values())[1 if inspect.isclass(target) else 0:]:
            if p.kind is p.VAR_KEYWORD:
                forwards = True
            elif p.kind is not p.VAR_POSITIONAL:
                params.add(p.name)
                if position == 0 and p.default is p.empty:
                    required.add(p.name)
        if not forwards:
            return params, required, False
        if functions[position + 1:] and functions[position + 1] is object.__init__:
            break
    # Keras base classes validate the keywords they are forwarded: a chain that
    # ends in Keras is closed; one that ends in a user's **kwargs is open.
    return params, required, not getattr(functions[-1], "__module__", "").startswith("keras.")


class Registry:
    """Names → component factories for one kind (``loss``, ``backbone``, ...)."""

    def __init__(self, kind: str, builtin_modules: Iterable[str] = ()):
        self.kind = kind
        self._builtin_modules = tuple(builtin_modules)
        self._entries: dict[str, Callable] = {}
        self._origins: dict[str, str] = {}
        self._loaded = False

    # -- registration -----------------------------------------------------
    def register(self, name: str | None = None, *, aliases: Iterable[str] = ()):
        """Decorator: ``@LOSSES.register("arcface")`` over a class or factory."""

        def decorate(target: Callable) -> Callable:
            for key in (name or _default_name(target), *aliases):
                self.add(key, target)
            return target

        return decorate

    def add(self, name: str, target: Callable, origin: str | None = None) -> None:
        # One spelling for "module.attribute": entry points write "module:attribute", so a
        # plugin class that is both decorated and exposed by an entry point is one registration.
        origin = (origin or f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"
                  ).replace(":", ".")
        previous = self._entries.get(name)
        if previous is not None and previous is not target and self._origins.get(name) != origin:
            raise ConfigError(
                f"{self.kind} '{name}' is registered twice ({self._origins[name]} and {origin}); "
                "rename one of them")
        self._entries[name] = target
        self._origins[name] = origin

    # -- lookup -----------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # set first: built-in modules register while importing
        for module in self._builtin_modules:
            import_package(module)
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_PREFIX + self.kind):
            if entry_point.name not in self._entries:
                self.add(entry_point.name, _LazyEntryPoint(entry_point), origin=entry_point.value)

    def names(self, pattern: str = "*") -> list[str]:
        import fnmatch

        self._load()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries or _is_dotted(name)

    def get(self, name: str) -> Callable:
        """The registered factory, or the object at a dotted import path."""
        self._load()
        if name in self._entries:
            target = self._entries[name]
            if isinstance(target, _LazyEntryPoint):
                target = self._entries[name] = target.load()
            return target
        if _is_dotted(name):
            return import_dotted(name, self.kind)
        raise ConfigError(f"unknown {self.kind} '{name}': {did_you_mean(name, self.names())}")

    # -- building ---------------------------------------------------------
    def check(self, node: Mapping[str, Any] | str, /, provided: Iterable[str] = ()) -> Callable:
        """Validate a node without building anything; returns the factory.

        ``provided`` names the arguments the framework fills at run time
        (``num_classes``, ``embedding_dim``), so they are not required here.
        """
        name, params = split_node(node, self.kind)
        target = self.get(name)
        accepted, required, is_open = accepted_parameters(target)
        if not is_open:
            for key in params:
                if key not in accepted:
                    raise ConfigError(
                        f"{self.kind} '{name}' has no parameter '{key}': "
                        f"{did_you_mean(key, accepted)}")
        missing = required - set(params) - set(provided)
        if missing:
            raise ConfigError(
                f"{self.kind} '{name}' needs {', '.join(sorted(missing))}: "
                f"set {self.kind}.{sorted(missing)[0]}=...")
        return target

    def build(self, node: Mapping[str, Any] | str, /, **runtime: Any) -> Any:
        """Build a component; ``runtime`` values are passed only where accepted."""
        target = self.check(node, provided=runtime)
        _, params = split_node(node, self.kind)
        accepted, _, is_open = accepted_parameters(target)
        extra = {k: v for k, v in runtime.items() if (is_open or k in accepted) and k not in params}
        return target(**params, **extra)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


class _LazyEntryPoint:
    """A plugin entry point imported only when its component is used."""

    def __init__(self, entry_point: importlib.metadata.EntryPoint):
        self.entry_point = entry_point

    def load(self) -> Callable:
        try:
            return self.entry_point.load()
        except Exception as error:  # a broken plugin must say which one
            raise ConfigError(
                f"plugin {self.entry_point.name} = {self.entry_point.value} failed to load: {error}"
            ) from error


def split_node(config: Mapping[str, Any] | str, kind: str) -> tuple[str, dict[str, Any]]:
    """``{"name": n, **params}`` (or a bare name) → ``(n, params)`` as plain Python."""
    if isinstance(config, str):
        return config, {}
    params = to_plain(config)
    if not isinstance(params, dict) or "name" not in params:
        raise ConfigError(f"{kind} config needs a 'name' key, got {params!r}")
    name = params.pop("name")
    return name, params


def to_plain(value: Any) -> Any:
    """OmegaConf nodes → dicts/lists, leaving plain values alone."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - hydra is a hard dependency
        return dict(value) if isinstance(value, Mapping) else value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def import_package(name: str) -> None:
    """Import a module and, for a package, every public submodule in it.

    This is what makes "one file plus one YAML" true: a new module dropped
    into ``losses/`` registers itself without editing an ``__init__``.
    """
    import pkgutil

    module = importlib.import_module(name)
    for info in pkgutil.iter_modules(getattr(module, "__path__", []), prefix=name + "."):
        if not info.name.rpartition(".")[2].startswith("_"):
            import_package(info.name)


def import_dotted(path: str, kind: str = "component") -> Any:
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"{kind} '{path}' cannot be imported ({error}); check the dotted path") from error


def _is_dotted(name: str) -> bool:
    return "." in name and not name.startswith(".")


def _default_name(target: Callable) -> str:
    import re

    name = getattr(target, "__name__", str(target))
    name = re.sub(r"(Loss|Layer|Loop|Backbone)$", "", name)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# One registry per seam. Built-in modules are imported on first lookup.
LOSSES = Registry("loss", ["losses"])
AUGMENTS = Registry("augment", ["augment"])
PREPROCESSORS = Registry("preprocess", ["augment.preprocess"])
BACKBONES = Registry("backbone", ["models.backbones"])
NECKS = Registry("neck", ["models.necks"])
HEADS = Registry("head", ["models.heads"])
LOOPS = Registry("loop", ["loops"])
DATASETS = Registry("dataset", ["trainer.data.sources"])
OPTIMIZERS = Registry("optimizer", ["trainer.optim"])
SCHEDULES = Registry("schedule", ["trainer.optim"])
CALLBACKS = Registry("callback", ["trainer.callbacks"])
EVALUATORS = Registry("evaluator", ["trainer.evaluation"])

REGISTRIES: dict[str, Registry] = {
    r.kind: r
    for r in (LOSSES, AUGMENTS, PREPROCESSORS, BACKBONES, NECKS, HEADS, LOOPS, DATASETS,
              OPTIMIZERS, SCHEDULES, CALLBACKS, EVALUATORS)
}


def registry(kind: str) -> Registry:
    """The registry of one kind; accepts plurals (``losses``) too."""
    key = kind[:-2] if kind.endswith("es") and kind[:-2] in REGISTRIES else kind
    key = key[:-1] if key not in REGISTRIES and key.endswith("s") else key
    if key not in REGISTRIES:
        raise ConfigError(f"unknown component kind '{kind}': {did_you_mean(kind, REGISTRIES)}")
    return REGISTRIES[key]


def build(kind: str, config: Mapping[str, Any] | str, /, **runtime: Any) -> Any:
    """Build any registered component: ``build("loss", {"name": "cosface", "margin": 0.35})``."""
    return registry(kind).build(config, **runtime)


def import_all_components() -> None:
    """Import every built-in component module and plugin of every registry.

    Importing a module registers its Keras classes as serializable, which is
    what loading a saved model that contains framework- or plugin-specific
    layers needs. A plugin that fails to import is skipped with a warning (a
    model that needs it then fails to load with Keras's own message).
    """
    import warnings

    for kind in REGISTRIES.values():
        for name in kind.names():
            try:
                kind.get(name)
            except ConfigError as error:
                warnings.warn(str(error), stacklevel=2)
