"""The package's shape: no import cycle, a one-way data path (CLI → training → models →
layers → costs/activations), ``import manual_bp`` showing the API and nothing else, and the
deprecated pre-``manual_bp.models`` paths still importable with a warning.

Imports are read from the source (AST), so a lazy import inside a function counts as much
as one at the top of the module: it is the same dependency, only deferred.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import subprocess
import sys
import warnings
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "manual_bp"


# ---------------------------------------------------------------------- the import graph
@cache
def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package is its ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_package(module: str) -> bool:
    return _modules()[module].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (``from . import x``, ``from ..a import b``)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> set[str]:
    """The package modules ``module`` imports, at any depth of its source.

    ``from p import name`` is an edge to ``p.name`` when that is a module, else to ``p``.
    """
    known = _modules()
    tree = ast.parse(known[module].read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source)
    return {name for name in found if name in known and name != module}


@cache
def _graph() -> dict[str, frozenset[str]]:
    return {module: frozenset(_imports(module)) for module in _modules()}


def _find_cycle(graph: dict[str, frozenset[str]]) -> list[str] | None:
    """One cycle ``[a, b, …, a]`` of ``graph``, or ``None`` (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_graph_reader_sees_every_kind_of_import():
    """The reader resolves relative imports and finds function-level ones (else (a) and (b)
    would pass vacuously)."""
    graph = _graph()
    assert "manual_bp.models.network" in graph["manual_bp.models"]  # package __init__
    assert "manual_bp.data" in graph["manual_bp.commands.train"]  # inside run()
    assert "manual_bp.verify" in graph["manual_bp.commands.verify"]  # `from manual_bp import`
    tree = ast.parse("from . import b\nfrom ..c import d\n")
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert _resolve("manual_bp.models.network", relative[0]) == "manual_bp.models"
    assert _resolve("manual_bp.models", relative[1]) == "manual_bp.c"


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": frozenset({"b"}), "b": frozenset()}) is None


def test_no_import_cycle():
    """(a) The import graph of every module, lazy imports included, is acyclic."""
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


# ---------------------------------------------------------------------- the data path
#: Lower rank = closer to the user. A module may import modules of its own or a higher
#: rank only: CLI → training → models → layers → costs/activations, never back up.
RANKS = {
    "manual_bp.cli": 0,
    "manual_bp.commands": 0,
    "manual_bp.__main__": 0,
    "manual_bp.verify": 0,
    "manual_bp.verify_pages": 0,
    "manual_bp.plotting": 0,
    "manual_bp.training": 1,
    "manual_bp.serialization": 1,
    "manual_bp.serialization_checks": 1,
    "manual_bp.serialization_legacy": 1,
    "manual_bp.sequence_training": 1,
    "manual_bp.curvature": 1,
    "manual_bp.models": 2,
    "manual_bp.model_spec": 2,
    "manual_bp.layers": 3,
    "manual_bp.initializers": 3,
    "manual_bp.costs": 4,
    "manual_bp.activations": 4,
}


def _rank(module: str) -> int | None:
    """The rank of the longest listed prefix of ``module`` (``None``: not on the path)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        rank = RANKS.get(".".join(parts[:n]))
        if rank is not None:
            return rank
    return None


def test_every_rank_names_a_module():
    """A renamed module must not silently drop out of the check."""
    assert not [name for name in RANKS if name not in _modules()]


def test_the_data_path_runs_one_way():
    """(b) No module imports a module closer to the user (lazy imports count)."""
    violations = []
    for module, imported in sorted(_graph().items()):
        own = _rank(module)
        if own is None or module == "manual_bp":  # the package face re-exports every level
            continue
        for name in sorted(imported):
            theirs = _rank(name)
            if theirs is not None and theirs < own:
                violations.append(f"{module} (rank {own}) imports {name} (rank {theirs})")
    assert not violations, "\n".join(violations)


# ---------------------------------------------------------------------- the public face
#: The modules ``import manual_bp`` may show: the API, no implementation modules.
PUBLIC_MODULES = {
    "activations",
    "costs",
    "curvature",
    "data",
    "divergence",
    "encoding",
    "equations",
    "gradcheck",
    "initializers",
    "layers",
    "losses",
    "model_spec",
    "models",
    "optimizers",
    "regularizers",
    "schedules",
    "sequence_data",
    "sequence_training",
    "serialization",
    "training",
}


def test_import_manual_bp_shows_the_api_only():
    """(c) Every module among ``vars(manual_bp)`` after a fresh ``import manual_bp`` is a
    public module (a submodule import binds its name on the package, so an implementation
    module imported by the package shows unless the package hides it)."""
    code = (
        "import json, types, manual_bp; print(json.dumps(sorted("
        "k for k, v in vars(manual_bp).items() if isinstance(v, types.ModuleType))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    shown = json.loads(result.stdout)
    assert {"models", "layers", "training"} <= set(shown)
    extra = sorted(set(shown) - PUBLIC_MODULES)
    assert not extra, f"import manual_bp shows implementation modules: {extra}"


# ---------------------------------------------------------------------- deprecated paths
DEPRECATED = {
    "manual_bp.network": "manual_bp.models.network",
    "manual_bp.sequential": "manual_bp.models.sequential",
    "manual_bp.sequential_targets": "manual_bp.models.targets",
    "manual_bp.sequential_parameters": "manual_bp.models.parameters",
}


@pytest.mark.parametrize(("old", "new"), DEPRECATED.items())
def test_deprecated_paths_warn_and_give_the_same_objects(old, new, monkeypatch):
    """(d) The pre-``manual_bp.models`` paths import with a ``DeprecationWarning`` naming
    the new path, and every public name they offer is the very object of the new module."""
    target = importlib.import_module(new)
    monkeypatch.delitem(sys.modules, old, raising=False)  # import afresh: the warning again
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shim = importlib.import_module(old)
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any(old in m and new in m for m in messages), messages
    names = getattr(shim, "__all__", None) or [
        n for n, v in vars(shim).items() if not n.startswith("_") and not inspect.ismodule(v)
    ]
    assert names
    for name in names:
        assert getattr(shim, name) is getattr(target, name), f"{old}.{name}"


# ---------------------------------------------------------------------- the learning rate
def test_the_learning_rate_is_decided_once_on_a_one_way_path():
    """``train --eta`` reaches ``train(eta=…)`` untouched (SGD's ``lr`` is made there);
    with an optimizer option, :func:`~manual_bp.optimizers.cli.learning_rate` decides
    once: ``--lr``, else η for SGD, else the rule's default. The optimizer helpers never
    import a command (the path does not come back)."""
    from manual_bp.cli import build_parser
    from manual_bp.optimizers.cli import step_from_args

    def step(*argv):
        return step_from_args(build_parser().parse_args(["train", "--eta", "0.3", *argv]))

    assert step() == {"eta": 0.3}
    assert step("--optimizer", "sgd")["optimizer"].lr == 0.3
    assert step("--optimizer", "sgd", "--lr", "0.1")["optimizer"].lr == 0.1
    assert step("--momentum", "0.9")["optimizer"].lr == 0.3
    assert step("--optimizer", "adam")["optimizer"].lr == 1e-3
    assert set(step("--schedule", "step", "--step-size", "2")) == {"eta", "schedule"}
    assert "manual_bp.optimizers.cli" in _graph()["manual_bp.commands.train"]
    upward = [
        (module, name)
        for module, imported in _graph().items()
        if module.startswith("manual_bp.optimizers")
        for name in imported
        if _rank(name) == 0
    ]
    assert not upward, upward
