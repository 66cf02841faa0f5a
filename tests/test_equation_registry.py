"""The equation registry keeps code, derivations and tests in step.

For every registered ID: the doc file has an ``<a id="ID"></a>`` anchor whose
section contains a ``$$`` derivation and links to the verifying test file; the
implementing object exists and its source names the ID; the test function
exists and its source names the ID. Conversely, every anchor in ``docs/`` and
every ``equation`` attribute of a registered component is a registered ID.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from manual_bp.activations import ACTIVATIONS
from manual_bp.costs import COSTS
from manual_bp.equations import EQUATIONS
from manual_bp.losses import LOSSES

ROOT = Path(__file__).resolve().parent.parent
ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
IDS = sorted(EQUATIONS)


def _section(doc_text: str, equation_id: str) -> str:
    marker = f'<a id="{equation_id}"></a>'
    start = doc_text.index(marker) + len(marker)
    following = ANCHOR.search(doc_text, start)
    return doc_text[start : following.start() if following else len(doc_text)]


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(dotted)


def _test_functions(path: Path) -> dict[str, str]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    return {
        node.name: ast.get_source_segment(source, node) or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
    }


def test_registry_is_not_empty():
    assert {"BP1", "BP2", "BP3", "BP4"} <= set(EQUATIONS)


@pytest.mark.parametrize("equation_id", IDS)
def test_equation_has_a_derivation(equation_id):
    equation = EQUATIONS[equation_id]
    doc = ROOT / equation.doc_file
    assert doc.is_file(), f"{equation_id}: doc file {equation.doc_file} is missing"
    text = doc.read_text(encoding="utf-8")
    assert f'<a id="{equation.anchor}"></a>' in text, (
        f'{equation_id}: {equation.doc_file} has no anchor <a id="{equation.anchor}"></a>'
    )
    section = _section(text, equation.anchor)
    assert "$$" in section, f"{equation_id}: its section in {equation.doc_file} derives nothing"
    test_file = Path(equation.test_file).name
    assert test_file in section, (
        f"{equation_id}: its section in {equation.doc_file} does not link to {test_file}"
    )


@pytest.mark.parametrize("equation_id", IDS)
def test_equation_has_an_implementation(equation_id):
    equation = EQUATIONS[equation_id]
    obj = _resolve(equation.code)
    source = inspect.getsource(obj)
    assert equation_id in source, f"{equation_id}: {equation.code} does not name its equation ID"


@pytest.mark.parametrize("equation_id", IDS)
def test_equation_has_a_test(equation_id):
    equation = EQUATIONS[equation_id]
    path = ROOT / equation.test_file
    assert path.is_file(), f"{equation_id}: test file {equation.test_file} is missing"
    functions = _test_functions(path)
    assert equation.test_function in functions, f"{equation_id}: {equation.test} does not exist"
    assert equation.test_function.startswith("test_")
    assert equation_id in functions[equation.test_function], (
        f"{equation_id}: {equation.test} does not name the equation it verifies"
    )


def test_every_doc_anchor_is_registered():
    unregistered = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for anchor in ANCHOR.findall(doc.read_text(encoding="utf-8")):
            if anchor not in EQUATIONS and not anchor.islower():
                unregistered.append(f"{doc.name}#{anchor}")
    assert not unregistered, f"anchors with no registry entry: {unregistered}"


def test_every_component_equation_is_registered():
    missing = []
    for cls in ACTIVATIONS.classes():
        if cls.equation not in EQUATIONS:
            missing.append(f"{cls.__name__}.equation = {cls.equation!r}")
    for cls in COSTS.classes():
        for equation_id in (cls.equation_value, cls.equation_grad):
            if equation_id not in EQUATIONS:
                missing.append(f"{cls.__name__}: {equation_id!r}")
        for activation, (equation_id, _) in cls.shortcuts.items():
            if equation_id not in EQUATIONS:
                missing.append(f"{cls.__name__} shortcut for {activation}: {equation_id!r}")
    for cls in LOSSES.classes():
        for equation_id in (cls.equation_value, cls.equation_grad):
            if equation_id not in EQUATIONS:
                missing.append(f"{cls.__name__}: {equation_id!r}")
    assert not missing, f"components name unregistered equations: {missing}"


def test_registry_paths_are_well_formed():
    for equation in EQUATIONS.values():
        assert equation.doc.startswith("docs/") and "#" in equation.doc, equation
        assert equation.test.startswith("tests/") and "::" in equation.test, equation
        assert equation.code.startswith("manual_bp."), equation
