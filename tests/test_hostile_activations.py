"""Hostile values into every activation function object (issue 24's introspection rule).

Every :class:`~manual_bp.activations.Activation` class — the registry's and any public name of
``manual_bp`` that is one — is driven through every public method that takes arrays, found by
introspection on the base class (``forward``, ``derivative``, ``backward``, … and
``__call__``; the fused step's ``forward_into``/``backward_inplace`` are internal and
unchecked). One argument at a time takes a value drawn by hypothesis: complex, bool, integer,
float16, object and string arrays, ``None``, nested lists, Python and NumPy scalars, strings,
objects — and the accepted forms: float32 and float64 arrays that are non-contiguous,
read-only, empty, 0-d or hold NaN and ±inf.

The property (torch's rule): an accepted value gives the result of the same call on a clean
contiguous copy, in the input's dtype (float32 stays float32), and ``forward`` and
``backward`` equal torch's (NaN where torch's is NaN, the same infinities); anything else is
one ``TypeError``/``ValueError`` on one line naming the argument. Never a warning, never a
NumPy- or Python-internal message. A new activation class is covered without a new test.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import manual_bp
from manual_bp.activations import ACTIVATIONS, Activation
from manual_bp.activations.normalising import _AlongDim
from reference.components import torch_activation
from tests.hostile_entries import INTERNAL

#: The fused step's in-place forms: internal, on buffers the step allocated (unchecked).
FAST = {"forward_into", "backward_inplace"}
CLASSES = sorted(
    set(ACTIVATIONS.classes())
    | {
        obj
        for obj in vars(manual_bp).values()
        if isinstance(obj, type) and issubclass(obj, Activation) and obj is not Activation
    },
    key=lambda c: c.__name__,
)
#: Every public array-taking method of the protocol, by introspection on the base class.
METHODS = [
    *sorted(
        name
        for name, value in vars(Activation).items()
        if inspect.isfunction(value) and not name.startswith("_") and name not in FAST
        and "z" in inspect.signature(value).parameters
    ),
    "__call__",
]  # fmt: skip
#: What the convenience entry ``__call__`` converts to float64 (its documented promise).
CALL_CONVERTS = {"int64", "int32", "uint8", "nested list", "Python float"}


def test_the_driven_methods_are_the_protocols():
    """The introspection finds the protocol (a renamed method would escape the driver)."""
    assert {"forward", "derivative", "backward", "jvp", "second_vjp"} <= set(METHODS)
    assert len(CLASSES) >= 25  # the 13 first ones, the 12 of the last stop, softmax's family


def _instances(cls: type) -> list[Activation]:
    if issubclass(cls, _AlongDim):
        return [cls(dim=-1), cls(dim=0)]
    return [cls()]


def _arguments(method: str) -> tuple[str, ...]:
    if method == "__call__":
        return ("z",)
    return tuple(inspect.signature(getattr(Activation, method)).parameters)[1:]


def _clean(activation: Activation, method: str, z: np.ndarray, rng) -> dict[str, np.ndarray]:
    """Valid arguments of ``method`` for pre-activations ``z``: ``a = σ(z)``, random g, dz."""
    values = {"z": z}
    with np.errstate(all="ignore"):
        values["a"] = np.asarray(activation.forward(np.array(z, order="C")))
    for name in ("grad_a", "dz"):
        values[name] = rng.standard_normal(z.shape).astype(z.dtype)
    return {name: values[name] for name in _arguments(method)}


def _call(activation: Activation, method: str, kwargs: dict):
    """``(result, error, warnings)`` of one call (positional, as the protocol is called)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result, error = getattr(activation, method)(*kwargs.values()), None
        except NotImplementedError:
            raise
        except Exception as exc:  # judged by the caller
            result, error = None, exc
    return result, error, [str(w.message) for w in caught]


def _implemented(activation: Activation, method: str) -> bool:
    z = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    try:
        _call(activation, method, _clean(activation, method, z, np.random.default_rng(0)))
    except NotImplementedError:  # derivative of a coupled σ: backward is its entry
        return False
    return True


# ------------------------------------------------------------------ the hostile values
BASE = np.array([[-2.0, -0.5, 0.0, 0.25, 1.5], [3.0, -1.0, 0.75, -3.5, 0.5]])
SPECIAL = (np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, 1e300, -1e300)

#: name -> builder(float64 array) of values torch's rule refuses
REFUSED = {
    "int64": lambda z: z.astype(np.int64),
    "int32": lambda z: z.astype(np.int32),
    "uint8": lambda z: np.abs(z).astype(np.uint8),
    "bool": lambda z: z > 0,
    "complex128": lambda z: z + 1j,
    "complex64": lambda z: (z + 1j).astype(np.complex64),
    "float16": lambda z: z.astype(np.float16),
    "object": lambda z: z.astype(object),
    "string": lambda z: np.full(z.shape, "a"),
    "None": lambda z: None,
    "nested list": lambda z: z.tolist(),
    "ragged": lambda z: [[1.0, 2.0], [3.0]],
    "Python float": lambda z: 1.5,
    "str": lambda z: "ab",
    "object()": lambda z: object(),
}
#: name -> builder(array of the drawn dtype) of values accepted as they are: the shape of
#: the call's arrays, and the memory layout of each
SHAPES = {
    "2-d": lambda z: z,
    "empty batch": lambda z: z[:0],
    "0-d": lambda z: z[0, 0].reshape(()),
    "1-d": lambda z: z[0],
}
LAYOUTS = {
    "contiguous": lambda z: z,
    "non-contiguous": lambda z: np.repeat(z[..., None], 2, axis=-1)[..., 0],
    "Fortran": lambda z: np.asfortranarray(z),
    "read-only": lambda z: _read_only(z),
}


def _read_only(z: np.ndarray) -> np.ndarray:
    z = np.array(z)  # a copy, also of a NumPy scalar (a 0-d σ(z) may come back as one)
    z.flags.writeable = False
    return z


@st.composite
def accepted_arrays(draw) -> tuple[str, np.ndarray]:
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    z = BASE.copy()
    for _ in range(draw(st.integers(0, 4))):  # a few special values planted anywhere
        index = (draw(st.integers(0, 1)), draw(st.integers(0, 4)))
        z[index] = draw(st.sampled_from(SPECIAL))
    with np.errstate(over="ignore"):
        z = z.astype(dtype)
    shape = draw(st.sampled_from(sorted(SHAPES)))
    return f"{shape} {draw(st.sampled_from(sorted(LAYOUTS)))}", SHAPES[shape](z)


def _names(message: str, argument: str) -> bool:
    import re

    return re.search(rf"(?<![\w.]){re.escape(argument)}(?![\w])", message) is not None


def _check_refusal(where: str, error: Exception | None, caught, argument: str, names=()):
    assert not caught, f"{where} warned: {caught}"
    assert error is not None, f"{where} accepted a value torch refuses"
    message = str(error)
    assert type(error) in (TypeError, ValueError), f"{where} raised {error!r}"
    assert "\n" not in message, f"{where}: a message of several lines: {message!r}"
    assert any(_names(message, n) for n in (argument, *names)), f"{where}: {message!r}"
    assert not any(f in message for f in INTERNAL), f"{where}: internal message {message!r}"


def _torch_forward_and_vjp(activation: Activation, z: np.ndarray, g: np.ndarray):
    zt = torch.tensor(z, requires_grad=True)
    if isinstance(activation, _AlongDim):  # the shared oracle takes the last axis only
        at = getattr(torch.nn, type(activation).__name__)(dim=activation.dim)(zt)
    else:
        at = torch_activation(activation)(zt)
    if z.size == 0:
        return at.detach().numpy(), np.zeros_like(z)
    (gt,) = torch.autograd.grad(at, zt, torch.tensor(g))
    return at.detach().numpy(), gt.numpy()


def _agree(ours: np.ndarray, theirs: np.ndarray, where: str, mask=None) -> None:
    """Equal NaN positions and infinities; finite values to the dtype's rounding (the clean
    comparisons of tests/test_activations*.py pin the accuracy; here: the same computation)."""
    if mask is not None:
        ours, theirs = ours[mask], theirs[mask]
    assert np.array_equal(np.isnan(ours), np.isnan(theirs)), f"{where}: NaN {ours} vs {theirs}"
    inf = np.isinf(theirs) | np.isinf(ours)
    assert np.array_equal(ours[inf], theirs[inf]), f"{where}: inf {ours} vs {theirs}"
    finite = np.isfinite(ours) & np.isfinite(theirs)
    eps = np.finfo(ours.dtype).eps  # the tails' cancellations (GELU, softsign) in absolute ε
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=64 * eps, atol=64 * eps,
                               err_msg=where)  # fmt: skip


#: torch's kernels that differ from the mathematics at a non-finite input, where ours keeps
#: the mathematics (issue 24's note): torch's float32 GELU gives NaN at +inf (its vectorised
#: erf); these entries are compared only at finite z.
TORCH_NONFINITE_QUIRKS = {("GELU", "float32")}

CASES = [
    (cls, method)
    for cls in CLASSES
    for method in METHODS
    if _implemented(_instances(cls)[0], method)
]  # fmt: skip


@pytest.mark.parametrize("cls, method", CASES, ids=[f"{c.__name__}.{m}" for c, m in CASES])
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_values_are_refused_in_one_line_or_computed_as_torch(cls, method, data):
    instance = data.draw(st.sampled_from(_instances(cls)), label="activation")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    arguments = _arguments(method)
    argument = data.draw(st.sampled_from(arguments), label="argument")
    where = f"{cls.__name__}.{method}({argument}=…)"
    if data.draw(st.booleans(), label="refused kind"):
        kind = data.draw(st.sampled_from(sorted(REFUSED)), label="kind")
        kwargs = _clean(instance, method, BASE.copy(), rng)
        kwargs[argument] = REFUSED[kind](BASE.copy())
        if method == "__call__" and kind in CALL_CONVERTS:
            # the convenience entry: integers, numbers and nested lists become float64
            result, error, caught = _call(instance, method, kwargs)
            assert error is None and not caught, f"{where} {kind}: {error!r} {caught}"
            want = instance.forward(np.asarray(kwargs["z"], dtype=np.float64))
            np.testing.assert_array_equal(result, want, err_msg=where)
            return
        if kind == "None" and (
            (argument == "a" and "z" in arguments)  # σ(z) is computed from z
            or (argument == "z" and instance.z_optional and method in ("backward", "jvp",
                                                                         "second_vjp"))
        ):  # fmt: skip
            result, error, caught = _call(instance, method, kwargs)
            assert error is None and not caught, f"{where} None: {error!r} {caught}"
            return
        result, error, caught = _call(instance, method, kwargs)
        dim = ("dim",) if isinstance(instance, _AlongDim) else ()
        _check_refusal(f"{where} {kind}", error, caught, argument, dim)
        return
    form, z = data.draw(accepted_arrays(), label="accepted")
    layout = LAYOUTS[form.split(" ")[-1]]  # each array of the call in that layout
    kwargs = {k: layout(v) for k, v in _clean(instance, method, z, rng).items()}
    z = layout(z)
    before = {k: v.copy() for k, v in kwargs.items()}
    result, error, caught = _call(instance, method, kwargs)
    where = f"{where} {form} {z.dtype}"
    assert not caught, f"{where} warned: {caught}"
    assert error is None, f"{where} refused an accepted input: {error!r}"
    for k, v in kwargs.items():  # the inputs are not written to
        np.testing.assert_array_equal(v, before[k], err_msg=f"{where}: {k} modified")
    assert result.dtype == z.dtype, f"{where}: {z.dtype} became {result.dtype}"
    clean = {k: np.array(v, order="C") for k, v in before.items()}
    expected, error, _ = _call(instance, method, clean)
    assert error is None
    assert result.shape == expected.shape, where
    np.testing.assert_array_equal(result, expected, err_msg=f"{where}: not the clean result")
    if method in ("forward", "__call__", "backward"):
        g = kwargs.get("grad_a", rng.standard_normal(z.shape).astype(z.dtype))
        fwd, vjp = _torch_forward_and_vjp(instance, np.array(z, order="C"), np.asarray(g))
        quirk = (cls.__name__, z.dtype.name) in TORCH_NONFINITE_QUIRKS
        finite_z = np.isfinite(z)
        if not instance.elementwise and z.ndim:  # a NaN or inf couples its whole slice
            finite_z = np.broadcast_to(finite_z.all(instance.axis(z), keepdims=True), z.shape)
        if method == "backward":  # at a non-finite z torch's kernels differ among dtypes
            _agree(result, vjp, where, finite_z & np.isfinite(g))
        else:
            _agree(result, fwd, where, finite_z if quirk else None)
