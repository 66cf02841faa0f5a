"""The public API reads like torch's (issue 14).

Classes of behaviour, each over every registered component:

* every registered class is importable from the top level ``manual_bp`` and listed in
  ``__all__``, and can be built by keyword from its own config;
* every registry is a read-only mapping of names to classes (``R["relu"]``, ``in``,
  ``len``, iteration) whose unknown-name errors list the valid names;
* every row of the table "Where manual_bp's names and defaults differ from torch's" in
  ``docs/conventions.md`` is pinned: our default from our signature, torch's from the
  torch class's ``inspect.signature``;
* torch-named aliases compute torch's function, up to the documented reduction.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import manual_bp
from manual_bp import (
    ACTIVATIONS,
    COSTS,
    LAYERS,
    OPTIMIZERS,
    REGULARIZERS,
    SCHEDULES,
)

ROOT = Path(__file__).resolve().parents[1]
REGISTRIES = {
    "ACTIVATIONS": ACTIVATIONS,
    "COSTS": COSTS,
    "OPTIMIZERS": OPTIMIZERS,
    "SCHEDULES": SCHEDULES,
    "REGULARIZERS": REGULARIZERS,
    "LAYERS": LAYERS,
}
#: Registered classes exported under another top-level name (a name clash).
RENAMED = {("manual_bp.layers.views", "Identity"): "IdentityLayer"}

ALL_CLASSES = [(key, cls) for key, registry in REGISTRIES.items() for cls in registry.classes()]


def _ids(item):
    return f"{item[0]}:{item[1].__name__}"


@pytest.mark.parametrize("item", ALL_CLASSES, ids=_ids)
def test_every_registered_class_is_importable_from_the_top_level(item):
    _, cls = item
    exported = RENAMED.get((cls.__module__, cls.__name__), cls.__name__)
    assert getattr(manual_bp, exported, None) is cls, f"manual_bp.{exported}"
    assert exported in manual_bp.__all__


def test_every_registry_is_importable_from_the_top_level():
    for key, registry in REGISTRIES.items():
        assert getattr(manual_bp, key) is registry and key in manual_bp.__all__


@pytest.mark.parametrize(
    "item", [i for i in ALL_CLASSES if i[0] != "LAYERS" and i[0] != "SCHEDULES"], ids=_ids
)
def test_every_component_is_built_by_keyword_from_its_config(item):
    """``Cls(**hyper-parameters)`` — the torch way — equals the config-dict way."""
    key, cls = item
    instance = cls()
    config = instance.get_config()
    params = {k: v for k, v in config.items() if k != "name"}
    assert cls(**params) == instance == REGISTRIES[key].get(config)


@pytest.mark.parametrize("key", list(REGISTRIES))
def test_every_registry_is_a_mapping_of_names_to_classes(key):
    registry = REGISTRIES[key]
    names = registry.names()
    assert list(registry) == names and len(registry) == len(names) > 0
    assert dict(registry.items()) == {name: registry[name] for name in names}
    for cls in registry.classes():
        for name in (cls.name, *cls.aliases, cls.name.upper()):
            assert name in registry
            assert registry[name] is cls  # the class, not an instance
    assert 3 not in registry and "no-such-thing" not in registry


@pytest.mark.parametrize("key", list(REGISTRIES))
def test_unknown_names_list_the_valid_ones_in_every_error(key):
    registry = REGISTRIES[key]
    listed = ", ".join(registry.names())
    for error in (KeyError, ValueError):  # R[name] is a mapping; get(name) a constructor
        with pytest.raises(error, match=re.escape(f"valid names: {listed}")):
            registry["no-such-thing"]
    with pytest.raises(ValueError, match=re.escape(f"valid names: {listed}")):
        registry.get("no-such-thing")
    with pytest.raises(TypeError, match="name must be a string"):
        registry[3]


# ---------------------------------------------------------------------- the table
def _table_rows():
    text = (ROOT / "docs" / "conventions.md").read_text()
    section = text.split("## Where manual_bp's names and defaults differ from torch's")[1]
    section = section.split("\n## ")[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] not in ("manual_bp", "---"):
            rows.append(cells)
    return rows


ROWS = _table_rows()


def _default(cls, names: str):
    """Defaults of ``names`` (comma-separated) in ``cls``'s signature; '—' if absent."""
    parameters = inspect.signature(cls).parameters
    values = []
    for name in (n.strip() for n in names.split(",")):
        if name not in parameters:
            return "—"
        default = parameters[name].default
        values.append("required" if default is inspect.Parameter.empty else default)
    return values[0] if len(values) == 1 else tuple(values)


def _literal(text: str):
    return text if text in ("—", "required") else ast.literal_eval(text)


def _torch_class(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_the_table_has_rows():
    assert len(ROWS) >= 15


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r[0]}.{r[1]}")
def test_every_table_row_is_pinned_against_both_signatures(row):
    ours, our_param, our_default, theirs, their_param, their_default, _ = row
    cls = getattr(manual_bp, ours)
    assert _default(cls, our_param) == _literal(our_default), f"manual_bp.{ours}({our_param})"
    assert _default(_torch_class(theirs), their_param) == _literal(their_default), theirs
    assert (our_param, _literal(our_default)) != (their_param, _literal(their_default))


def test_torch_names_of_hyper_parameters_are_accepted():
    assert manual_bp.LeakyReLU(negative_slope=0.2) == manual_bp.LeakyReLU(alpha=0.2)
    assert manual_bp.LeakyReLU(alpha=0.3).negative_slope == 0.3
    assert manual_bp.HuberCost(delta=2.0) == manual_bp.HuberCost(threshold=2.0)
    assert manual_bp.Adam(betas=(0.8, 0.9)) == manual_bp.Adam(beta1=0.8, beta2=0.9)
    assert manual_bp.AdamW(betas=(0.8, 0.9)).betas == (0.8, 0.9)
    for call in (
        lambda: manual_bp.LeakyReLU(alpha=0.2, negative_slope=0.3),
        lambda: manual_bp.HuberCost(threshold=2.0, delta=3.0),
        lambda: manual_bp.Adam(beta1=0.5, betas=(0.8, 0.9)),
        lambda: manual_bp.Adam(betas=0.9),
    ):
        with pytest.raises(ValueError, match=r"not both|pair"):
            call()


def test_get_last_lr_returns_a_list_as_torch():
    param = torch.nn.Parameter(torch.zeros(1))
    twin = torch.optim.lr_scheduler.StepLR(torch.optim.SGD([param], lr=0.5), 2, gamma=0.5)
    schedule = manual_bp.StepLR(manual_bp.SGD(lr=0.5), step_size=2, gamma=0.5)
    for _ in range(5):
        assert schedule.get_last_lr() == twin.get_last_lr()
        twin.optimizer.step()
        twin.step()
        schedule.step()


# ---------------------------------------------------------------------- torch-named aliases
F = torch.nn.functional

#: alias -> (our inputs' kind, torch loss on tensors with reduction="sum", factor)
#: with C = factor · torch_sum / n (the reduction difference of the table). The
#: torch-named losses are torch's modules now (manual_bp.losses, torch's reduction),
#: pinned by tests/test_losses_elementwise.py and tests/test_losses_classification*.py.
ALIASES = {
    "Hardtanh": (None, None, None),
}


def _inputs(kind, rng):
    a = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, 5)
    if kind == "probability":
        return 1 / (1 + np.exp(-a)), rng.random((5, 4))
    if kind == "logit":
        return a, rng.random((5, 4))
    if kind == "class-logit":
        return a, labels
    if kind == "log-probability":
        p = rng.random((5, 4)) + 0.1
        return a - np.log(np.exp(a).sum(axis=1, keepdims=True)), p / p.sum(axis=1, keepdims=True)
    if kind == "rate":
        return np.exp(a), rng.integers(0, 4, (5, 4)).astype(float)
    return a, rng.standard_normal((5, 4))


@pytest.mark.parametrize("alias", list(ALIASES))
def test_every_torch_named_alias_is_a_registered_class_computing_torchs_function(alias):
    cls = getattr(manual_bp, alias)
    assert alias in manual_bp.__all__
    assert any(cls in registry.classes() for registry in REGISTRIES.values())
    kind, torch_loss, factor = ALIASES[alias]
    if kind is None:
        assert cls is manual_bp.HardTanh
        return
    a, y = _inputs(kind, np.random.default_rng(0))
    yt = torch.tensor(y)
    expected = factor * float(torch_loss(torch.tensor(a), yt)) / a.shape[0]
    assert cls()(a, y) == pytest.approx(expected, rel=1e-12)
