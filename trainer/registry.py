"""Component registries: one per seam, turning config nodes into objects.

A component is registered with a decorator and configured by a node such as
``{"name": "cosface", "margin": 0.35}``. The registry, not the caller:

* imports the built-in modules of its kind itself, so nothing has to be
  imported "for its side effect" before a name can be found;
* discovers plugins through the ``facetrain.<kind>`` entry-point group;
* accepts a dotted path (``keras.layers.RandomFlip``) for outside components,
  but only to a *class* of the seam's base type (a Keras ``Layer`` for
  augmentations, a Keras ``Loss`` for losses, ...), checked before anything is
  called: a config names components, it cannot call ``os.system``
  (docs/trust.md is the trust model);
* checks a node's keys, and the types of numeric parameters, against the
  constructor before anything is built, and fails with one line naming the
  group, the bad key and the closest ones.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

ENTRY_POINT_PREFIX = "facetrain."

# Top-level packages a dotted path may never name. The standard library holds no
# Keras component, and some of its modules act when imported (``antigravity``)
# or exist to run commands (``os``, ``subprocess``): refusing them before the
# import gives the clearest line and imports nothing.
REFUSED_PACKAGES = frozenset(sys.stdlib_module_names) | {"builtins", "__main__"}


class ConfigError(ValueError):
    """A user mistake in configuration; its message is one line that says how to fix it."""


class NotANumber(ConfigError):
    """A component parameter that takes a number (or a boolean) was given something else.

    Its message already starts with the key's config path (``loss.margin=...``),
    so callers add no group prefix.
    """


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


def _constructors(target: Callable) -> list[Callable]:
    """The functions whose parameters a node may set: the factory, or the ``__init__`` chain."""
    if not inspect.isclass(target):
        return [target]
    return [c.__init__ for c in inspect.getmro(target) if "__init__" in vars(c)
            and c is not object]


def typed_parameters(target: Callable) -> dict[str, tuple[str, bool]]:
    """Parameters whose values must be numbers or booleans: name → (kind, None accepted).

    ``kind`` is ``"number"`` or ``"boolean"``, read from the annotation
    (``int``, ``float``, ``bool``, optionally ``| None``) or, with no annotation,
    from the default's type. The first function in the ``__init__`` chain that
    names a parameter decides; parameters of any other type are not checked.
    """
    found: dict[str, tuple[str, bool] | None] = {}
    for function in _constructors(target):
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            break
        for p in parameters:
            if p.name not in found and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                found[p.name] = _parameter_kind(p)
    return {name: kind for name, kind in found.items() if kind is not None}


def _parameter_kind(p: inspect.Parameter) -> tuple[str, bool] | None:
    annotation = p.annotation
    if annotation is not p.empty:
        # Annotations are strings under ``from __future__ import annotations``, types otherwise.
        text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
        text = text.replace("typing.", "")
        optional = text.startswith("Optional[") and text.endswith("]")
        if optional:
            text = text[len("Optional["):-1]
        parts = {part.strip() for part in text.split("|")}
        allows_none = optional or "None" in parts or p.default is None
        if parts - {"None"} and parts <= {"int", "float", "None"}:
            return "number", allows_none
        if parts - {"None"} == {"bool"}:
            return "boolean", allows_none
        return None
    if isinstance(p.default, bool):
        return "boolean", False
    if isinstance(p.default, (int, float)):
        return "number", False
    return None


def declaration(target) -> dict:
    """One component's declaration, read from the imported object."""
    accepted, required, is_open = accepted_parameters(target)
    doc = inspect.getdoc(target) or ""
    entry = {"module": getattr(target, "__module__", None),
             "summary": doc.splitlines()[0] if doc else "",
             "parameters": sorted(accepted), "required": sorted(required), "open": is_open,
             "typed": {k: list(v) for k, v in typed_parameters(target).items()}}
    minimums = getattr(target, "minimums", None)  # declared with ``at_least``
    if isinstance(minimums, dict):
        entry["minimums"] = {str(k): float(v) for k, v in minimums.items()}
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
    import textwrap

    code = getattr(rule, "__code__", None)
    if (code is None or rule.__name__ == "<lambda>" or rule.__closure__
            or not set(code.co_names) <= set(dir(builtins))):
        return {}
    try:
        return {"function": rule.__name__, "source": textwrap.dedent(inspect.getsource(rule))}
    except (OSError, TypeError):
        return {}


def at_least(**minimums: float):
    """Declare the smallest value each numeric parameter can take (``embedding_dim=1``).

    The registry checks a config against it before anything is built, so ``neck.embedding_dim=0``
    is one line naming the key, not an error deep inside Keras.
    """
    def declare(target):
        target.minimums = {**getattr(target, "minimums", {}), **minimums}
        return target
    return declare


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fits(value: Any, kind: str, allows_none: bool) -> bool:
    """Whether ``value`` can be what the parameter takes.

    A number parameter may still take a list (Keras layers take ``factor=0.2`` or a
    range ``[0.0, 0.3]``), so only values that are never numbers are refused.
    """
    if value is None:
        return allows_none
    if kind == "number":
        return not isinstance(value, (str, bool, Mapping))
    return isinstance(value, bool) or (is_number(value) and value in (0, 1))


class Registry:
    """Names → component factories for one kind (``loss``, ``backbone``, ...).

    ``base`` is the dotted name of the class (or classes) a dotted-path component
    must subclass, resolved on first use so that importing the registry imports
    no Keras. ``None``: this seam takes registered components only.
    """

    def __init__(self, kind: str, builtin_modules: Iterable[str] = (),
                 base: str | tuple[str, ...] | None = None):
        self.kind = kind
        self.base = (base,) if isinstance(base, str) else tuple(base or ())
        self.builtin_modules = tuple(builtin_modules)
        self._entries: dict[str, Callable] = {}
        self._origins: dict[str, str] = {}
        self._loaded = False
        self._plugins_listed = False

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
    # Built-in components are known from their declarations (trainer/component_index.py)
    # until something needs the object itself; plugins and dotted paths are imported when used.
    def _load(self) -> None:
        """Import every built-in module (registering its components) and list the plugins."""
        if self._loaded:
            return
        self._loaded = True  # set first: built-in modules register while importing
        for module in self.builtin_modules:
            import_package(module)
        self._add_plugins()

    def _add_plugins(self) -> None:
        if self._plugins_listed:
            return
        self._plugins_listed = True  # entry points are read once per process
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_PREFIX + self.kind):
            if entry_point.name not in self._entries:
                self.add(entry_point.name, _LazyEntryPoint(entry_point), origin=entry_point.value)

    def declared(self) -> dict[str, dict]:
        """Built-in name → its declaration, read without importing it ({} when no index)."""
        index = _component_index()
        if index is None:
            self._load()  # the index could not be made: the modules report why when imported
            return {}
        self._add_plugins()
        return index.get(self.kind, {})

    def builtin_entries(self) -> dict[str, Callable]:
        """The registered components that come from this registry's built-in modules."""
        return {name: target for name, target in self._entries.items()
                if not isinstance(target, _LazyEntryPoint)
                and str(getattr(target, "__module__", "")).startswith(
                    tuple(f"{m}." for m in self.builtin_modules) + self.builtin_modules)}

    def names(self, pattern: str = "*") -> list[str]:
        import fnmatch

        names = set(self.declared()) | set(self._entries)
        return sorted(n for n in names if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self.names() or _is_dotted(name)

    def get(self, name: str) -> Callable:
        """The registered factory, or the object at a dotted import path."""
        if name not in self._entries:
            declared = self.declared().get(name)
            if declared is not None and declared.get("module"):
                import_package(declared["module"])  # registers it
            if name not in self._entries:
                self._load()
        if name in self._entries:
            target = self._entries[name]
            if isinstance(target, _LazyEntryPoint):
                target = self._entries[name] = target.load()
            return target
        if _is_dotted(name):
            return self._import_component(name)
        raise ConfigError(f"unknown {self.kind} '{name}': {did_you_mean(name, self.names())}")

    def declaration(self, name: str) -> dict:
        """What a node may set: ``parameters``, ``required``, ``open``, ``typed``, ``summary``.

        A built-in component not yet imported answers from the index; anything else (a
        plugin, a dotted path, a component registered at run time) is imported and inspected.
        """
        if name not in self._entries:
            declared = self.declared().get(name)
            if declared is not None:
                return declared
        return declaration(self.get(name))

    def minimum_input_size(self, name: str, params: Mapping[str, Any]) -> int | None:
        """A backbone's smallest input side for ``params``, or None when it declares none."""
        rule = self.declaration(name).get("minimum_input_size")
        if rule is None:
            return None
        if not set(rule["reads"]) & set(params):
            return int(rule["value"])
        if "source" in rule:  # a rule of built-ins only, run from its source: nothing imported
            import builtins

            namespace: dict[str, Any] = {}
            exec(compile(rule["source"], f"<{self.kind} {name}: minimum_input_size>", "exec"),
                 {"__builtins__": builtins}, namespace)
            return int(namespace[rule["function"]](**params))
        return int(getattr(self.get(name), "minimum_input_size")(**params))

    def base_classes(self) -> tuple[type, ...]:
        return tuple(import_dotted(base, f"{self.kind} base class") for base in self.base)

    def _import_component(self, path: str) -> type:
        """The class at a dotted path, if it is a class of this seam's base type.

        Nothing found at the path is called here; the builder instantiates it
        only after this check. Importing its module runs that module's
        top-level code, as any ``import`` does (docs/trust.md).
        """
        allowed = " or ".join(self.base) or "registered components only"
        if not self.base:
            raise ConfigError(
                f"{self.kind} '{path}' is a dotted path, and {self.kind}s are built from registered "
                f"names only: register it (@{self.kind.upper()}S.register or a "
                f"{ENTRY_POINT_PREFIX}{self.kind} entry point)")
        package = path.split(".", 1)[0]
        if package in REFUSED_PACKAGES:
            raise ConfigError(
                f"{self.kind} '{path}' is refused: configs may not name the Python standard library "
                f"('{package}'); a dotted {self.kind} must be a subclass of {allowed} (docs/trust.md)")
        target = import_dotted(path, self.kind)
        if not inspect.isclass(target):
            what = "a function" if callable(target) else f"a {type(target).__name__}"
            raise ConfigError(
                f"{self.kind} '{path}' is {what}, not a class: a dotted {self.kind} must be a "
                f"subclass of {allowed}, and functions are never called from a config (register a "
                f"factory to use one; docs/trust.md)")
        bases = self.base_classes()
        if not issubclass(target, bases):
            raise ConfigError(
                f"{self.kind} '{path}' is not a subclass of {allowed}: a config builds only "
                f"{self.kind} classes (docs/trust.md)")
        return target

    # -- building ---------------------------------------------------------
    def check(self, node: Mapping[str, Any] | str, /, provided: Iterable[str] = (),
              where: str | None = None) -> Callable:
        """Validate a node without building anything; returns the factory (imported)."""
        return self.get(self.verify(node, provided, where))

    def verify(self, node: Mapping[str, Any] | str, /, provided: Iterable[str] = (),
               where: str | None = None) -> str:
        """Validate a node without building (or, for built-ins, importing) anything; returns its name.

        ``provided`` names the arguments the framework fills at run time
        (``num_classes``, ``embedding_dim``), so they are not required here.
        ``where`` is the node's config path (``loss``, ``augment.ops[2]``) for messages.
        """
        name, params = split_node(node, self.kind)
        if not isinstance(name, str):
            raise ConfigError(f"{where or self.kind}.name={name!r} is not a name: give the "
                              f"name of a registered {self.kind} or a dotted class path")
        declared = self.declaration(name)
        accepted, required, is_open = set(declared["parameters"]), set(declared["required"]), declared["open"]
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
        # A word where the constructor's default (or annotation) is a number can only
        # fail later, deep inside TensorFlow: say so now, naming the key.
        for key, (kind, allows_none) in declared["typed"].items():
            if key in params and not _fits(params[key], kind, allows_none):
                what = "a number" if kind == "number" else "true or false"
                raise NotANumber(f"{where or self.kind}.{key}={params[key]!r} is not {what} "
                                 f"({self.kind} '{name}' takes {what} for {key})")
        for key, minimum in declared.get("minimums", {}).items():
            value = params.get(key)
            if is_number(value) and value < minimum:
                raise NotANumber(f"{where or self.kind}.{key}={value!r} is out of range: {self.kind} "
                                 f"'{name}' takes {key} >= {minimum:g}")
        return name

    def build(self, node: Mapping[str, Any] | str, /, **runtime: Any) -> Any:
        """Build a component; ``runtime`` values are passed only where accepted."""
        target = self.check(node, provided=runtime)
        _, params = split_node(node, self.kind)
        accepted, _, is_open = accepted_parameters(target)
        extra = {k: v for k, v in runtime.items() if (is_open or k in accepted) and k not in params}
        return target(**params, **extra)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


_INDEX: dict | None = None
_INDEX_READ = False


def _component_index() -> dict | None:
    """The built-in components' declarations, read once per process."""
    global _INDEX, _INDEX_READ
    if not _INDEX_READ:
        _INDEX_READ = True
        from trainer.component_index import load

        modules = [m for r in REGISTRIES.values() for m in r.builtin_modules]
        _INDEX = load(list(dict.fromkeys(modules)))
    return _INDEX


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
    from omegaconf import DictConfig, ListConfig, OmegaConf  # here: importing the registry stays light
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
    except Exception as error:  # the user's module itself is broken (a SyntaxError, raising at import)
        from trainer.errors import first_line

        raise ConfigError(f"{kind} '{path}': its module {module_name} fails when imported "
                          f"({type(error).__name__}: {first_line(error)}); fix that module") from error


def _is_dotted(name: str) -> bool:
    return "." in name and not name.startswith(".")


def _default_name(target: Callable) -> str:
    import re

    name = getattr(target, "__name__", str(target))
    name = re.sub(r"(Loss|Layer|Loop|Backbone)$", "", name)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# One registry per seam. Built-in modules are imported on first lookup.
# ``base``: what a dotted path in a config must be a subclass of (resolved lazily).
# Backbones are usually registered factories (functions); by dotted path only a
# Layer class (a keras.Model is one) can be named, so a function such as
# keras.applications.ResNet50 needs a registered factory (models/backbones/keras_apps.py).
# Evaluators share no base class: they are registered only.
LAYER = "keras.layers.Layer"
LOSSES = Registry("loss", ["losses"], base="keras.losses.Loss")
AUGMENTS = Registry("augment", ["augment"], base=LAYER)
PREPROCESSORS = Registry("preprocess", ["augment.preprocess"], base=LAYER)
BACKBONES = Registry("backbone", ["models.backbones"], base=LAYER)
NECKS = Registry("neck", ["models.necks"], base=LAYER)
HEADS = Registry("head", ["models.heads"], base=LAYER)
LOOPS = Registry("loop", ["loops"], base="keras.Model")
DATASETS = Registry("dataset", ["trainer.data.sources"], base="trainer.data.sources.base.DataSource")
OPTIMIZERS = Registry("optimizer", ["trainer.optim"], base="keras.optimizers.Optimizer")
SCHEDULES = Registry("schedule", ["trainer.optim"],
                     base="keras.optimizers.schedules.LearningRateSchedule")
CALLBACKS = Registry("callback", ["trainer.callbacks"], base="keras.callbacks.Callback")
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
