"""Hostile inputs at the Transformer family's own methods (issue 24): ``encode``, ``decode``,
``set_masks`` and every argument of ``forward`` after the first (``memory``, ``tgt`` and the
masks; the first is driven by :mod:`tests.test_hostile_layers`).

The family is found by introspection (every registered class of a ``transformer*`` module)
and each argument's kind by its name (:data:`KINDS`), so a new method or argument fails
:func:`test_every_argument_has_a_kind` until it is covered. Each argument gets one hostile
value drawn by hypothesis; the property, with every warning an error:

* an input torch accepts (a float32 mask for a float64 layer, a bool/float mask of either
  kind, ``-inf`` entries, ``None`` where optional, non-contiguous and read-only arrays, NaN
  in a sequence, an empty batch) gives torch's result (``encode``/``decode`` are torch's
  ``forward`` on the batch-first layout, argument for argument);
* anything else raises ONE ``TypeError``/``ValueError`` from a ``raise`` of manual_bp whose
  one-line message names the argument as the method's signature spells it (``mask``, not the
  inner attention's ``attn_mask``), before any work.

``set_masks`` cannot know the next input's sizes: it checks kinds and ranks; a mask of the
wrong size is refused by the chain's forward (:mod:`tests.test_transformer`'s attention).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manual_bp import LAYERS
from reference.checks_transformer import torch_transformer_call
from tests.hostile_entries import _names
from tests.test_hostile_layers import DRIVEN_ELSEWHERE, EXAMPLES, _hostile, _ours
from tests.test_save_every_layer import BUILDERS

#: the methods driven here (``forward``: its arguments after the first)
DRIVEN = ("forward", "encode", "decode", "set_masks")
#: every argument of a driven method, by name: its kind
KINDS = {
    **dict.fromkeys(("x", "src", "tgt", "memory"), "sequence"),
    **dict.fromkeys(("mask", "src_mask", "tgt_mask", "memory_mask"), "attn"),
    **dict.fromkeys(("padding", "tgt_padding", "memory_padding", "src_key_padding_mask",
                     "tgt_key_padding_mask", "memory_key_padding_mask"), "padding"),
    # torch's hints that a mask is causal (flags: used as given, a truthy hint needs the mask)
    **dict.fromkeys(("is_causal", "src_is_causal", "tgt_is_causal", "memory_is_causal"), "hint"),
}  # fmt: skip
FAMILY = sorted(
    cls.__name__
    for cls in LAYERS.classes()
    if cls.__module__.startswith("manual_bp.layers.transformer")
)


def _methods(cls: type) -> list[str]:
    return [m for m in DRIVEN if callable(getattr(cls, m, None))]


def _parameters(cls: type, method: str) -> list[str]:
    return [p for p in inspect.signature(getattr(cls, method)).parameters if p != "self"]


def test_every_argument_has_a_kind():
    """Every class with one of the family's own methods is in the family, and every argument
    of every driven method has a kind: a new one fails here until the strategy knows it."""
    for cls in LAYERS.classes():
        own = {"encode", "decode", "set_masks"} & set(dir(cls))
        assert not own or cls.__name__ in FAMILY, f"{cls.__name__}: {own} not driven"
    assert {"TransformerEncoderLayer", "Transformer"} <= set(FAMILY)
    assert set(DRIVEN) >= DRIVEN_ELSEWHERE, "tests/test_hostile_layers.py defers an entry here"
    for name in FAMILY:
        cls = next(c for c in LAYERS.classes() if c.__name__ == name)
        for method in _methods(cls):
            unknown = set(_parameters(cls, method)) - set(KINDS)
            assert not unknown, f"{name}.{method}: arguments without a kind {sorted(unknown)}"


# ---------------------------------------------------------------------- valid arguments
N_, Q, K, E = 2, 3, 4, 4  # batch, query length, key (memory/source) length, width


def _shape(name: str, two: bool, n: int, heads: int, three: bool) -> tuple[int, ...]:
    """The shape of argument ``name`` (``two``: a Transformer, whose ``src`` is the source)."""
    src = K if two else Q
    lengths = {"x": Q, "tgt": Q, "src": src, "memory": K}
    if name in lengths:
        return (n, lengths[name], E)
    if KINDS[name] == "padding":
        keys = K if name.startswith("memory") or (name.startswith("src") and two) else Q
        return (n, keys)
    rows, keys = {"mask": (Q, Q), "src_mask": (src, src), "tgt_mask": (Q, Q),
                  "memory_mask": (Q, K)}[name]  # fmt: skip
    return (n * heads, rows, keys) if three else (rows, keys)


def _valid(draw, name: str, two: bool, n: int, heads: int, rng) -> Any:
    kind = KINDS[name]
    if kind == "sequence":
        return rng.standard_normal(_shape(name, two, n, heads, False))
    if kind == "hint":
        return False
    form = draw(st.sampled_from(["none", "bool", "float"]))
    if form == "none":
        return None
    three = kind == "attn" and draw(st.booleans())
    shape = _shape(name, two, n, heads, three)
    mask = rng.random(shape) < 0.4
    mask[..., 0] = False  # every query keeps a key
    if form == "float":  # finite values and -inf (not allowed), as torch adds them
        return np.where(mask, -np.inf, rng.standard_normal(shape))
    return mask


def _heads(layer: Any) -> int:
    return layer.nhead if hasattr(layer, "nhead") else layer.layers[0].nhead


# ---------------------------------------------------------------------- hostile values
SEQUENCE_REFUSED = ("complex", "bool", "object", "str", "datetime", "float16", "nested list",
                    "None", "scalar", "rank+1", "rank-1", "last axis", "huge", "int",
                    "other float")  # fmt: skip
SEQUENCE_ACCEPTED = ("non-contiguous", "read-only", "nan")
MASK_REFUSED = ("complex", "int", "object", "str", "datetime", "float16", "nested list",
                "scalar", "nan", "+inf", "rank+1", "rank-1", "last axis", "first axis")  # fmt: skip
MASK_ACCEPTED = ("None", "float32", "float64", "bool", "non-contiguous", "read-only")
SHAPED = ("rank+1", "rank-1", "last axis", "first axis")


def _hostile_mask(mask: np.ndarray, how: str) -> Any:
    """``mask`` (bool or float) made hostile in the way ``how``."""
    allowed = ~mask if mask.dtype == bool else np.isfinite(mask)
    if how == "None":
        return None
    if how in ("float32", "float64"):  # the same mask as floats (0 allowed, -inf not)
        return np.where(allowed, 0.0, -np.inf).astype(how)
    if how == "bool":
        return ~allowed
    if how in ("nan", "+inf"):
        spoilt = np.where(allowed, 0.0, -np.inf)
        spoilt.reshape(-1)[-1] = np.nan if how == "nan" else np.inf
        return spoilt
    if how == "int":
        return (~allowed).astype(np.int64)
    if how == "first axis":  # one row more (a zero row: an empty batch's mask has none)
        return np.concatenate([mask, np.zeros((1, *mask.shape[1:]), mask.dtype)], axis=0)
    return _hostile(mask, how, mask.dtype if mask.dtype.kind == "f" else np.float64)


def _verdict(method: str, name: str, how: str) -> bool | str:
    """True: torch accepts it (the result must be torch's); False: refused; "either"."""
    kind = KINDS[name]
    optional = method in ("forward", "set_masks") and name in ("memory", "tgt")
    if kind == "sequence":
        if how == "None" and optional:
            return "either"  # the one-input form (memory = tgt), sizes may then differ
        if how == "rank-1" and method == "forward":
            return "either"  # torch's unbatched form: the masks may still fit
        return how in SEQUENCE_ACCEPTED
    if method == "set_masks" and how in SHAPED:
        return "either"  # the size is the next forward's to check
    return how in MASK_ACCEPTED


def _hostile_value(value: Any, name: str, how: str) -> Any:
    if KINDS[name] == "sequence":
        return _hostile(value, how, value.dtype)
    return _hostile_mask(value, how)


# ---------------------------------------------------------------------- calls and torch
def _torch(layer: Any, args: dict[str, Any]) -> np.ndarray:
    """torch's forward of ``layer``'s configuration on the same arguments (batch-first)."""
    params = {k: torch.tensor(v) for k, v in layer.named_parameters()}
    tensors = [None if a is None else torch.tensor(np.array(a)) for a in args.values()]
    return torch_transformer_call(layer, params, *tensors).detach().numpy()


def _call(layer: Any, method: str, args: dict[str, Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return getattr(layer, method)(*args.values())
        finally:
            if method == "set_masks":
                layer.set_masks()


@st.composite
def cases(draw, name: str):
    cls = next(c for c in LAYERS.classes() if c.__name__ == name)
    layer = BUILDERS[name][1](draw, (Q, E))
    layer.eval()  # dropout off: torch's module is built with dropout 0
    method = draw(st.sampled_from(_methods(cls)))
    names = _parameters(cls, method)
    two = "src" in names and "tgt" in names
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    unbatched = method == "forward" and draw(st.booleans())  # torch's (L, E) form
    n = 1 if unbatched else draw(st.integers(0, 3))  # 0: the empty batch, accepted as torch
    args = {p: _valid(draw, p, two, n, _heads(layer), rng) for p in names}
    if unbatched:  # sequences (L, E), padding masks (S,); attention masks (nhead, L, S) stay
        args = {p: _unbatched(p, v) for p, v in args.items()}
    return layer, method, args, n, unbatched


def _unbatched(name: str, value: Any) -> Any:
    squeeze = KINDS[name] in ("sequence", "padding") and value is not None
    return value[0] if squeeze else value


@pytest.mark.parametrize("name", FAMILY)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_arguments_are_refused_in_one_line_or_computed_as_torch(name, data):
    layer, method, args, n, unbatched = data.draw(cases(name))
    names = [p for p in args if KINDS[p] != "hint" and not (method == "forward" and p == next(
        iter(args)))]  # fmt: skip
    valid = _call(layer, method, args)  # the drawn arguments are valid
    if method != "set_masks":
        _same_as_torch(layer, args, valid[0])
    if not names:
        return
    target = data.draw(st.sampled_from(names))
    value = args[target]
    if value is None:  # an absent mask: hostile values are made from a present one
        if KINDS[target] == "sequence":
            return
        two = "src" in args and "tgt" in args
        value = np.zeros(_shape(target, two, n, _heads(layer), False), bool)
        value = _unbatched(target, value) if unbatched else value
    choices = (
        SEQUENCE_REFUSED + SEQUENCE_ACCEPTED
        if KINDS[target] == "sequence"
        else MASK_REFUSED + MASK_ACCEPTED
    )
    how = data.draw(st.sampled_from(choices))
    if how in ("nan", "+inf", "huge") and not value.size:
        return  # an empty batch has no entry to spoil, no row to repeat
    hostile = dict(args)
    hostile[target] = _hostile_value(value, target, how)
    verdict = _verdict(method, target, how)
    where = f"{name}.{method}({target}={how})"
    try:
        got = _call(layer, method, hostile)
    except (TypeError, ValueError) as error:
        assert verdict is not True, f"{where} refused an input torch accepts: {error!r}"
        message = str(error)
        assert _ours(error), f"{where}: not manual_bp's own raise: {message!r}"
        assert "\n" not in message.strip(), message
        # the one-input form (tgt or memory None: the input itself) may leave a mask unfit
        masks = [p for p in args if KINDS[p] in ("attn", "padding")] if how == "None" else []
        named = any(_names(message, p) for p in [target, *masks])
        assert named, f"{where}: {message!r} omits {target!r}"
        return
    assert verdict is not False, f"{where} accepted a hostile value"
    if verdict is True and method != "set_masks":
        _same_as_torch(layer, hostile, got[0])


def _same_as_torch(layer: Any, args: dict[str, Any], out: np.ndarray) -> None:
    data = {k: v for k, v in args.items() if KINDS[k] != "hint"}
    empty = any(isinstance(v, np.ndarray) and v.ndim == 3 and not v.shape[0] for v in data.values())
    try:
        want = _torch(layer, data)
    except RuntimeError:  # torch's reshape of an empty batch with a 3-D mask (an internal fault)
        assert empty, "torch refused a non-empty batch"
        assert out.shape[0] == 0 and out.dtype == np.float64
        return
    assert out.shape == want.shape and out.dtype == np.float64
    np.testing.assert_allclose(out, want, rtol=1e-9, atol=1e-11, equal_nan=True)
