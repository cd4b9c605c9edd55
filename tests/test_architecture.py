"""The shape of the house, checked on the source: layers, no import cycles, no private imports.

Imports are read with ``ast`` (nothing is imported), at module level *and*
inside functions: a function-level import is still a dependency, and a cycle
through one is still a cycle (it only fails later, at the first call).
Imports under ``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("trainer", "losses", "augment", "models", "loops", "hydra_plugins")
COMPONENTS = ("losses", "augment", "models", "loops")
# What a component may import from the runtime: the registry, the one module of Keras
# internals, and the small helpers that import nothing of the framework.
COMPONENT_MAY_IMPORT = {"trainer.registry", "trainer.keras_private", "trainer.errors",
                        "trainer.seeding", "trainer.normalize", "trainer.replicas", "trainer.collectives",
                        "trainer.faces.template",  # the ArcFace template and its warp (NumPy only)
                        "trainer.export.model_files"}  # loading a model file (BCT's old model, a teacher)

# (importer, imported) pairs still to fix; removed by the job-builder change.
ALLOWED_COMPONENT_IMPORTS: set = set()
# Import cycles still to fix (each as the sorted modules of the cycle); removed by the
# job-builder change.
ALLOWED_CYCLES: set = set()
# (importer, "module.name") private names still imported across modules; removed by the
# job-builder change.
ALLOWED_PRIVATE_IMPORTS: set = set()


@dataclass(frozen=True)
class Import:
    importer: str
    module: str            # the module it resolves to (a package's ``__init__`` counts as the package)
    name: str | None       # ``from module import name``; None for ``import module``
    in_function: bool


def find_modules() -> dict[str, str]:
    """Dotted module name -> file, for every module of the packages."""
    modules = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(REPO, package)):
            for file in files:
                if file.endswith(".py"):
                    dotted = os.path.relpath(os.path.join(folder, file), REPO)[:-3].replace(os.sep, ".")
                    modules[dotted.removesuffix(".__init__")] = os.path.join(folder, file)
    return modules


MODULES = find_modules()


def own_module(dotted: str) -> str | None:
    """The longest prefix of ``dotted`` that is one of our modules (None: outside the packages)."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def imports_of(importer: str) -> list[Import]:
    path = MODULES[importer]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = importer if path.endswith("__init__.py") else importer.rpartition(".")[0]
    found: list[Import] = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    target = own_module(alias.name)
                    if target:
                        found.append(Import(importer, target, None, in_function))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the importer's package, up level - 1
                    anchor = package
                    for _ in range(child.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                for alias in child.names:
                    submodule = f"{base}.{alias.name}"
                    if submodule in MODULES:  # ``from trainer import io``: the module trainer.io
                        found.append(Import(importer, submodule, None, in_function))
                    elif own_module(base):
                        found.append(Import(importer, own_module(base), alias.name, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                           ast.Lambda)))

    visit(tree, False)
    return found


IMPORTS = [i for module in sorted(MODULES) for i in imports_of(module)]


def cycles(edges: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(tuple(sorted(component)))
    return found


def test_the_reader_sees_the_tree():
    """The checks below mean something only if the graph is the real one."""
    assert {"trainer.registry", "losses.margin", "augment.pipeline", "models.layers",
            "loops.base", "trainer.io"} <= set(MODULES)
    assert Import("trainer.records", "trainer.io", "write_json", False) in IMPORTS
    assert any(i.importer == "trainer.commands.export" and i.in_function for i in IMPORTS)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [("a", "b", "c")]


def test_no_import_cycles_between_modules():
    edges: dict[str, set[str]] = {module: set() for module in MODULES}
    for i in IMPORTS:
        if i.module != i.importer:
            edges[i.importer].add(i.module)
    found = set(cycles(edges))
    assert not found - ALLOWED_CYCLES, f"import cycles: {sorted(found - ALLOWED_CYCLES)}"
    stale = ALLOWED_CYCLES - found
    assert not stale, f"fixed, take them off ALLOWED_CYCLES: {sorted(stale)}"


PLUMBING = ("cli", "edge", "command_config", "outputs")


def test_no_module_imports_a_command():
    """Commands (trainer/commands/) are leaves: the core, components and other commands never import one.

    A command may use the commands' shared plumbing (``command_config``: the command line;
    ``edge``: the failure contract; ``outputs``: the kind of an ``output=``; ``cli``: the older
    helpers) and a package of its own;
    ``__main__`` modules are entry points and may hand over to the command they name.
    """
    def command_of(module: str) -> str | None:
        parts = module.split(".")
        if parts[:2] != ["trainer", "commands"] or len(parts) < 3 or parts[2] in PLUMBING:
            return None
        return ".".join(parts[:4]) if parts[2] in ("tools", "data") and len(parts) > 3 else ".".join(parts[:3])

    bad = sorted({(i.importer, i.module) for i in IMPORTS
                  if command_of(i.module) and command_of(i.module) != command_of(i.importer)
                  and not i.importer.endswith("__main__")})
    assert not bad, f"modules importing a command: {bad}"


def test_components_import_only_the_registry_keras_internals_and_small_helpers():
    """Components never reach into config, data, evaluation, export, the runner or commands."""
    used = {(i.importer, i.module) for i in IMPORTS
            if i.importer.split(".")[0] in COMPONENTS and i.module.split(".")[0] == "trainer"
            and i.module not in COMPONENT_MAY_IMPORT}
    assert not used - ALLOWED_COMPONENT_IMPORTS, \
        f"components importing the runtime: {sorted(used - ALLOWED_COMPONENT_IMPORTS)}"
    stale = ALLOWED_COMPONENT_IMPORTS - used
    assert not stale, f"fixed, take them off ALLOWED_COMPONENT_IMPORTS: {sorted(stale)}"


def test_the_small_helpers_import_nothing_of_the_framework():
    """What components may import must not pull the runtime in behind their back."""
    # The model-file loader needs the registry (plugin layers), first_line and file I/O; no more.
    may = {"trainer.export.model_files": {"trainer.errors", "trainer.registry", "trainer.io"}}
    for helper in COMPONENT_MAY_IMPORT - {"trainer.registry", "trainer.keras_private"}:
        imported = {i.module for i in IMPORTS if i.importer == helper and i.module.split(".")[0] in PACKAGES}
        assert imported <= may.get(helper, set()), helper


def is_private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def private_reach(i: Import) -> str | None:
    """What private thing ``i`` imports (``module.name`` or a private module), if it is not allowed.

    A private *name* is its module's own business. A private *module* (``_common``,
    ``_base``) is shared by the modules of its own package and no one else.
    """
    if i.name is not None and is_private(i.name):
        return f"{i.module}.{i.name}"
    if any(is_private(part) for part in i.module.split(".")):
        if i.importer.rpartition(".")[0] != i.module.rpartition(".")[0]:
            return i.module
    return None


def test_no_module_imports_another_modules_private_names():
    found = {(i.importer, reach) for i in IMPORTS if (reach := private_reach(i)) is not None}
    assert not found - ALLOWED_PRIVATE_IMPORTS, \
        f"private cross-module imports: {sorted(found - ALLOWED_PRIVATE_IMPORTS)}"
    stale = ALLOWED_PRIVATE_IMPORTS - found
    assert not stale, f"fixed, take them off ALLOWED_PRIVATE_IMPORTS: {sorted(stale)}"


def test_the_private_rule_allows_a_packages_own_common_module_only():
    assert private_reach(Import("models.backbones.tiny", "models.backbones._common", "apply", False)) is None
    assert private_reach(Import("models.necks._common", "models.backbones._common", "batch_norm", False)) \
        == "models.backbones._common"
    assert private_reach(Import("trainer.commands.bench.measure", "trainer.run", "_callbacks", True)) \
        == "trainer.run._callbacks"


# -- declared contracts: nothing probes a head, loss or loop with getattr / hasattr -----------

# The classes whose members are the contract, and where they are declared.
CONTRACT_CLASSES = {"models/heads/base.py": "FaceHead", "losses/base.py": "FaceLoss",
                    "loops/base.py": "FaceLoop"}
# Names that stand for a head, loss or loop in the runtime; ``self.model`` is a callback's loop
# (a bare ``model`` is too often the embedding model to count).
CONTRACT_OBJECTS = {"head", "loss", "loop", "probe", "self.model"}
CONTRACT_SUFFIXES = ("_head", "_loss", "_loop")
# (file, attribute) probes that stay, and why. Each entry must still match a probe (no stale ones).
PROBE_EXCEPTIONS = {
    # Keras's own Model attributes, read off the loop by callbacks; not part of the facetrain contract.
    ("trainer/records.py", "steps_per_execution"): "Keras's compile() argument",
    ("trainer/callbacks/nan_guard.py", "optimizer"): "absent before Keras's compile()",
    ("trainer/commands/bench/measure.py", "train_function"): "Keras's, absent before the first fit",
    # The loss harness accepts any Keras loss (a class or a dotted path), not only FaceLoss;
    # its owner can read these off FaceLoss after an isinstance check instead.
    ("trainer/testing/harness.py", "input_kind"): "any Keras loss; to replace with isinstance(FaceLoss)",
    ("trainer/testing/harness.py", "scale_invariant"): "any Keras loss; as above",
    ("trainer/testing/harness.py", "stochastic"): "any Keras loss; as above",
    ("trainer/testing/harness.py", "deterministic_overrides"): "any Keras loss; as above",
    ("trainer/testing/harness.py", "gradient_bound"): "any Keras loss; as above",
    # The bench (trainer/commands, not the contract change's to edit). To become:
    # ``loop.own_update_step is not None`` (models/heads/own_update.py), and its minimal step
    # ``loop.own_update_step.recording`` / ``.apply_gradients``; then FaceLoop.head_owns_update
    # and FaceLoop.apply_gradients_with_rows go.
    ("trainer/commands/bench/switches.py", "head_owns_update"): "to move to own_update_step",
    ("trainer/commands/bench/minimal_step.py", "head_owns_update"): "to move to own_update_step",
}


def declared_members(path: str, class_name: str) -> set[str]:
    """Attributes and methods ``class_name`` declares: its class body and ``self.x =`` in methods."""
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node in cls.body:
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name) and node in cls.body:
                    names.add(target.id)
                elif (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                      and target.value.id == "self"):
                    names.add(target.attr)
    return {n for n in names if not n.startswith("__")}


CONTRACT_MEMBERS = set().union(*(declared_members(p, c) for p, c in CONTRACT_CLASSES.items()))


def object_name(node) -> str:
    """``loop`` for ``loop``, ``head`` for ``self.loop.head``, ``self.model`` for itself."""
    if isinstance(node, ast.Attribute) and ast.unparse(node) == "self.model":
        return "self.model"
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def probes(path: str) -> list[tuple[str, str, int]]:
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        return probes_in(f.read(), path)


def probes_in(source: str, path: str = "<source>") -> list[tuple[str, str, int]]:
    """(object, attribute, line) of each getattr/hasattr on a head, loss or loop: the object
    is named like one (``self`` in a class named *Loop too), or the attribute is a member
    FaceHead, FaceLoss or FaceLoop declares."""
    tree = ast.parse(source, path)
    loop_selves = set()  # the ``self`` nodes of methods of classes named *Loop
    for cls in ast.walk(tree):
        if isinstance(cls, ast.ClassDef) and cls.name.endswith("Loop"):
            loop_selves.update(id(n) for n in ast.walk(cls) if isinstance(n, ast.Name) and n.id == "self")
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2):
            continue
        target, attribute = node.args[0], node.args[1]
        attribute = attribute.value if isinstance(attribute, ast.Constant) else ast.unparse(attribute)
        name = object_name(target)
        names_contract = (name in CONTRACT_OBJECTS or name.endswith(CONTRACT_SUFFIXES)
                          or id(target) in loop_selves)
        if names_contract or attribute in CONTRACT_MEMBERS:
            found.append((ast.unparse(target), attribute, node.lineno))
    return found


def runtime_files() -> list[str]:
    files = []
    for package in ("loops", "trainer"):
        for folder, _, names in os.walk(os.path.join(REPO, package)):
            files += [os.path.relpath(os.path.join(folder, n), REPO) for n in names if n.endswith(".py")]
    return sorted(files)


def test_loops_and_the_runtime_read_declared_contracts_never_probe_them():
    """Heads, losses and loops declare what loops and the runtime read (docs/architecture.md,
    "Declared contracts"): no getattr/hasattr on them in loops/ or trainer/."""
    found = {(path, attribute): f"{path}:{line} {kind}" for path in runtime_files()
             for kind, attribute, line in ((f"getattr/hasattr({target}, {attribute!r})", attribute, line)
                                           for target, attribute, line in probes(path))}
    unexpected = sorted(where for key, where in found.items() if key not in PROBE_EXCEPTIONS)
    assert not unexpected, f"probed instead of declared: {unexpected}"
    stale = sorted(set(PROBE_EXCEPTIONS) - set(found))
    assert not stale, f"fixed, take them off PROBE_EXCEPTIONS: {stale}"


def test_the_probe_scan_sees_a_probe():
    """The scan itself: each way of naming a head, loss or loop is caught, a plain object is not."""
    source = ("class PairLoop:\n    def f(self):\n        return getattr(self, 'x', None)\n"
              "def g(loss, cfg, augment, model):\n"
              "    return (hasattr(loss, 'name'), getattr(cfg.head, 'x'), getattr(augment, 'uses_labels'),\n"
              "            getattr(cfg, 'name'), getattr(model, 'layers'), getattr(self.model, 'x'))\n")
    assert {(t, a) for t, a, _ in probes_in(source)} == \
        {("self", "x"), ("loss", "name"), ("cfg.head", "x"), ("augment", "uses_labels"), ("self.model", "x")}
