"""Layers from specs: names, classes, config dicts and ``(name, args, kwargs)`` triples.

Kept apart from :mod:`manual_bp.layers.base` because an activation's name stands for an
:class:`~manual_bp.layers.activation.ActivationLayer`, which is itself a layer: the base
module must not import it (no import cycle, function-level imports included).
"""

from __future__ import annotations

import inspect
from typing import Any

from manual_bp.activations import ACTIVATIONS
from manual_bp.layers.activation import ActivationLayer
from manual_bp.layers.base import LAYERS, Layer, Shape

__all__ = ["build_layer", "get_layer"]


def get_layer(spec: str | Layer | type[Layer] | dict[str, Any]) -> Layer:
    """A layer from a name, class, instance or config dict (activation names included)."""
    if isinstance(spec, str) and spec not in LAYERS:
        return ActivationLayer(spec)
    if isinstance(spec, dict) and isinstance(spec.get("name"), str) and spec["name"] not in LAYERS:
        return ActivationLayer(spec)
    return LAYERS.get(spec)


def _check_options(cls: type[Layer], name: str, kwargs: dict[str, Any]) -> None:
    """Keyword options the layer's constructor does not take: one line listing those it does."""
    parameters = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        valid = [k for k, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        raise TypeError(f"layer {name!r} has no option(s) {unknown}; options: {', '.join(valid)}")


def build_layer(item: Any, input_shape: Shape, n_outputs: int | None = None) -> Layer:
    """A layer from a spec item, sizes inferred from the per-sample ``input_shape``.

    ``item`` is a :class:`Layer` (used as is), a name (``"relu"``, ``"flatten"``), a
    ``(name, args, kwargs)`` triple or a config dict (``{"name": "dense", "args": [30]}``
    or ``{"name": "dense", "out_features": 30}``). Layer names go through the class's
    ``from_shape``; any other name must be an activation (keyword options only).
    """
    if isinstance(item, Layer):
        return item
    if isinstance(item, tuple) and len(item) == 3:
        name, args, kwargs = item
    elif isinstance(item, str):
        name, args, kwargs = item, (), {}
    elif isinstance(item, dict):
        kwargs = dict(item)
        name = kwargs.pop("name", None)
        args = kwargs.pop("args", ())
        if name is None:
            raise ValueError(f"layer config {item!r} has no 'name'")
        if not isinstance(name, str):
            raise TypeError(f"layer config {item!r}: 'name' must be a string, got {name!r}")
        if not isinstance(args, (list, tuple)):
            raise TypeError(
                f"layer config {item!r}: 'args' must be a list of positional arguments, "
                f"got {type(args).__name__} {args!r}"
            )
    else:
        raise TypeError(f"a layer spec must be a name, a config dict or a Layer, got {item!r}")
    if name in LAYERS:
        cls = LAYERS.lookup(name)
        _check_options(cls, name, kwargs)
        return cls.from_shape(tuple(input_shape), *args, n_outputs=n_outputs, **dict(kwargs))
    if name not in ACTIVATIONS:
        raise ValueError(
            f"unknown layer {name!r}; layers: {', '.join(LAYERS.names())}; "
            f"activations: {', '.join(ACTIVATIONS.names())}"
        )
    if args:
        raise ValueError(f"activation {name!r} takes keyword options only, got {tuple(args)!r}")
    return ActivationLayer({"name": name, **kwargs})
