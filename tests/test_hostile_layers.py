"""Hostile inputs at every public entry of every layer (issue 24, "How it is tested").

Every registered layer class (``manual_bp.LAYERS``, built by the drawing functions of
:mod:`tests.test_save_every_layer`) and every entry found on it by introspection —
``forward``, ``backward``, ``parameter_gradients``, each V-axis product, ``__call__`` — gets
one argument replaced by a hostile value drawn by hypothesis: wrong dtypes (complex, bool,
object, strings, dates, integers, float16, the other float precision), nested lists, ``None``,
wrong ranks and sizes, arrays larger than the machine's memory (broadcast views, refused before
any allocation), and the inputs torch accepts: empty batches, NaN/inf, non-contiguous and
read-only arrays. The property, with every warning an error:

* an input torch accepts gives the result of the same call on a plain contiguous copy (bit
  for bit), an empty batch an empty output and zero parameter gradients, a NaN a result (NaN
  propagates, nothing is refused), a dtype-free layer's float32 a float32 output (no cast);
* anything else raises ONE ``TypeError``/``ValueError`` from a ``raise`` of manual_bp (never
  NumPy's or Python's own message) whose message names the argument.

:func:`test_every_public_entry_is_covered` fails when a layer class gains a public method
the strategy does not know (an entry to cover, or a non-entry to list in ``NOT_ENTRIES``).
"""

from __future__ import annotations

import inspect
import os
import traceback
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manual_bp import LAYERS
from manual_bp.layers import Layer
from manual_bp.layers._entry import layer_float_dtype
from tests.test_save_every_layer import BUILDERS, VOCABULARY

#: the entries that take data, and how each one's arguments are made from a forward pass
ENTRIES = (
    "forward",
    "__call__",
    "backward",
    "parameter_gradients",
    "input_vjp",
    "param_vjp",
    "input_jvp",
    "param_jvp",
    "residual",
    "jvp",
)
#: public methods that are no entry of their own: structure, state and construction; helpers
#: of a cache or of sizes; and torch's older call forms that only route to forward/backward
#: (``forward_sequence``, ``attend`` -> ``forward``; ``backward_sequence``,
#: ``attend_backward`` -> the checks of ``backward``)
NOT_ENTRIES = {
    "children", "eval", "fast_step", "from_shape", "get_config", "get_extra_state",
    "hyperparameter", "named_buffers", "named_parameters", "output_shape", "reset_parameters",
    "set_extra_state", "train", "from_config", "constant_rows", "derivative",
    "second_derivative", "divisor", "full_shape", "output_padding_for", "indices",
    "attend", "attend_backward", "forward_sequence", "backward_sequence",
    # lazy convolutions' materialisation (a shape, no data); a cell's torch-form backward
    # (its gradients of torch's value go through the checked step backward)
    "materialize", "has_uninitialized_params", "backward_cell",
    # a padding layer's index map (built from the shape; no data)
    "pad_map", "named_children",
    # RReLU's reseeding of its generator (a seed, no data)
    "manual_seed",
}  # fmt: skip
#: entries with arguments of their own kinds (masks, a memory), each argument driven by
#: tests/test_hostile_transformer.py (which fails when one is not)
DRIVEN_ELSEWHERE = {"encode", "decode", "set_masks"}
#: per-sample shapes of each kind of input the builders know
SHAPES = {
    "features": (3,), "images": (2, 4, 4), "sequences": (3, 4), "tokens": (3,),
    "volumes": (2, 3, 3, 3),
}  # fmt: skip
V = 2


def entries(cls: type) -> list[str]:
    """The data entries of ``cls``: every name of :data:`ENTRIES` it has (``__call__`` only
    where a class below :class:`Layer` defines it)."""
    found = [name for name in ENTRIES if name != "__call__" and callable(getattr(cls, name, None))]
    if any("__call__" in vars(k) for k in cls.__mro__ if issubclass(k, Layer) and k is not Layer):
        found.append("__call__")
    return found


def public_methods(cls: type) -> set[str]:
    return {
        name
        for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and (inspect.isfunction(value) or inspect.ismethod(value))
    }


def test_every_public_entry_is_covered():
    """Every registered class has a builder, and every public method of every class is an
    entry the strategy drives or a listed non-entry: a new one fails here until covered."""
    registered = {cls.__name__ for cls in LAYERS.classes()}
    assert registered <= set(BUILDERS), f"no builder for {registered - set(BUILDERS)}"
    for cls in LAYERS.classes():
        unknown = public_methods(cls) - set(ENTRIES) - NOT_ENTRIES - DRIVEN_ELSEWHERE
        assert not unknown, f"{cls.__name__}: public methods not covered: {sorted(unknown)}"
        assert {"forward", "backward"} <= set(entries(cls))


# ---------------------------------------------------------------------- building a point
def _kind(name: str) -> str:
    kinds = BUILDERS[name][0]
    return "features" if "any" in kinds else kinds[0]


def _point(draw, name: str) -> tuple[Any, np.ndarray, Any]:
    kind = _kind(name)
    shape = SHAPES[kind]
    layer = BUILDERS[name][1](draw, shape)
    layer.train(draw(st.booleans()))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n = draw(st.integers(2, 3))
    if kind == "tokens":
        x = rng.integers(0, VOCABULARY, (n, *shape))
    else:
        x = rng.standard_normal((n, *shape))
    return layer, x, rng


def _arguments(layer: Any, entry: str, x: np.ndarray, rng) -> tuple[list[Any], list[str]]:
    """Valid arguments of ``entry`` at ``x`` and the names of those that carry data."""
    if entry in ("forward", "__call__"):
        return [x], [_first(layer, entry)]
    out, cache = _forward(layer, x)
    dout = rng.standard_normal(out.shape)
    M = rng.standard_normal((V, *out.shape))
    T = None if layer.index_input else rng.standard_normal((V, *x.shape))
    T_params = {k: rng.standard_normal((V, *p.shape)) for k, p in layer.params.items()}
    if entry in ("backward", "parameter_gradients"):
        return [dout, cache], [_first(layer, entry)]
    if entry in ("input_vjp", "param_vjp"):
        return [cache, M], [None, "M"]
    if entry == "input_jvp":
        return [cache, T], [None, "T"]
    if entry == "param_jvp":
        return [cache, T_params], [None, "T_params"]
    if entry == "residual":
        return [cache, dout, T, T_params], [None, "dout", "T", "T_params"]
    dx = None if T is None else T[0]
    return [cache, dx, {k: v[0] for k, v in T_params.items()}], [None, "dx", "dparams"]


def _first(layer: Any, entry: str) -> str:
    method = getattr(type(layer), "forward" if entry == "__call__" else entry)
    return next(p for p in inspect.signature(method).parameters if p != "self")


def _forward(layer: Any, x: np.ndarray) -> tuple[np.ndarray, Any]:
    return layer.forward(x)


def _call(layer: Any, entry: str, args: list[Any]) -> Any:
    return getattr(layer, entry)(*args)


# ---------------------------------------------------------------------- hostile values
HUGE = 2**45  # elements: more than any machine's memory in float64 (a broadcast view)

REFUSED = (
    "complex",
    "bool",
    "object",
    "str",
    "datetime",
    "float16",
    "nested list",
    "None",
    "scalar",
    "rank+1",
    "rank-1",
    "last axis",
    "huge",
    "int",
    "other float",
)
ACCEPTED = ("non-contiguous", "read-only", "nan", "inf", "empty batch")


def _hostile(value: np.ndarray, how: str, float_dtype: np.dtype | None) -> Any:
    """``value`` made hostile in the way ``how``."""
    if how == "complex":
        return value.astype(np.complex128)
    if how == "bool":
        return value > 0
    if how == "object":
        return value.astype(object)
    if how == "str":
        return value.astype(str)
    if how == "datetime":
        return np.zeros(value.shape, "datetime64[s]")
    if how == "float16":
        return value.astype(np.float16)
    if how == "nested list":
        return value.tolist()
    if how == "None":
        return None
    if how == "scalar":
        return 1.5
    if how == "rank+1":
        return value[..., None]
    if how == "rank-1":
        return value.reshape(-1) if value.ndim > 1 else value.reshape(-1)[:1].reshape(())
    if how == "last axis":
        return np.concatenate([value, value[..., :1]], axis=-1)
    if how == "huge":
        rows = HUGE // max(1, value[0].size if value.ndim else 1)
        return np.broadcast_to(np.zeros((), value.dtype), (rows, *value.shape[1:]))
    if how == "int":
        return np.rint(value).astype(np.int64)
    if how == "other float":
        return value.astype(np.float32 if float_dtype == np.float64 else np.float64)
    if how == "non-contiguous":
        wide = np.zeros((*value.shape, 2), value.dtype)
        wide[..., 0] = value
        return wide[..., 0]
    if how == "read-only":
        frozen = value.copy()
        frozen.flags.writeable = False
        return frozen
    if how in ("nan", "inf"):
        spoilt = value.astype(float_dtype or np.float64, copy=True)
        spoilt.reshape(-1)[:: max(1, spoilt.size // 3)] = np.nan if how == "nan" else np.inf
        return spoilt
    raise AssertionError(how)


def _names_the_argument(message: str, name: str) -> bool:
    aliases = {name, "upstream gradient"} if name in ("dout", "dz", "grad_a", "d_out") else {name}
    if name in ("input", "x"):  # torch's name of a layer's input and the library's
        aliases |= {"x", "input", "per-sample shape"}  # (a size fault: "per-sample shape")
    return any(f"{alias}{end}" in message for alias in aliases for end in " :[")


def _ours(error: BaseException) -> bool:
    """The error was raised by a ``raise`` of manual_bp (reference/torch_modules.py's rule)."""
    last = traceback.extract_tb(error.__traceback__)[-1]
    return "/manual_bp/" in last.filename.replace("\\", "/") and "raise" in (last.line or "")


def _same(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            _same(u, v)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        # BLAS may sum in another order for another memory layout: rounding, no more
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    elif not hasattr(a, "input"):  # caches are compared through the outputs
        assert a == b or (a is None and b is None)


LAYER_NAMES = sorted(BUILDERS)
#: examples per layer class (HOSTILE_EXAMPLES=300 for a longer hunt)
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "30"))


@st.composite
def cases(draw, name: str):
    layer, x, rng = _point(draw, name)
    entry = draw(st.sampled_from(entries(type(layer))))
    return layer, x, rng, entry


@pytest.mark.parametrize("name", LAYER_NAMES)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_inputs_are_refused_in_one_line_or_computed_as_torch(name, data):
    layer, x, rng, entry = data.draw(cases(name))
    if (not layer.params and entry == "param_jvp") or (layer.index_input and entry == "input_jvp"):
        return  # no parameter (input) to take a tangent of: refused by design, tested elsewhere
    args, names = _arguments(layer, entry, x, rng)
    if entry == "residual" and args[2] is None and not args[3]:
        return  # no tangent at all
    try:
        _call(layer, entry, args)
    except NotImplementedError:  # the layer has no such product (an embedding's input_jvp)
        return
    slots = [i for i, n in enumerate(names) if n is not None and args[i] is not None]
    slot = data.draw(st.sampled_from(slots))
    value, name_of = args[slot], names[slot]
    if isinstance(value, dict):  # T_params / dparams: spoil one parameter's tangent
        if not value:
            return
        key = data.draw(st.sampled_from(sorted(value)))
        how = data.draw(st.sampled_from([h for h in REFUSED if h != "other float"]))
        hostile = dict(value)
        hostile[key] = _hostile(value[key], how, value[key].dtype)
        _expect_refusal(layer, entry, [*args[:slot], hostile, *args[slot + 1 :]], name_of, how)
        return
    float_dtype = None if value.dtype.kind in "iu" else value.dtype
    choices = list(REFUSED + ACCEPTED)
    how = data.draw(st.sampled_from(choices))
    if how == "empty batch":
        if entry in ("forward", "__call__"):
            _check_empty(layer, entry, x)
        return
    hostile = _hostile(value, how, float_dtype)
    new_args = [*args[:slot], hostile, *args[slot + 1 :]]
    verdict = _accepted(layer, how, entry)
    if how == "None" and (entry, name_of) in OPTIONAL:
        verdict = entry != "residual" or bool(args[3])  # the other tangent, or none at all
    if verdict == "either":  # another shape of input: torch's unbatched forms, any-rank layers
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                _call(layer, entry, new_args)
        except (TypeError, ValueError) as error:
            _check_refusal(error, name_of, how, entry, layer)
    elif verdict:
        _expect_result(layer, entry, new_args, how)
    else:
        _expect_refusal(layer, entry, new_args, name_of, how)


#: arguments whose None is a valid value (a zero tangent)
OPTIONAL = {("jvp", "dx"), ("residual", "T")}
#: hostile shapes: refused where the shape is fixed (gradients, stacks), maybe not by forward
SHAPED = ("rank+1", "rank-1", "last axis")


def _accepted(layer: Any, how: str, entry: str) -> bool | str:
    """Whether torch accepts this hostile value in that place (``"either"``: it may)."""
    forward = entry in ("forward", "__call__")
    if how in ACCEPTED:
        return not (layer.index_input and forward and how in ("nan", "inf"))  # whole numbers
    if forward and how in SHAPED:
        return "either"
    if how == "other float":  # float32: a dtype-free layer's input, a float64 layer's gradient
        return layer_float_dtype(layer) is None or not forward
    if layer.index_input and forward:
        return how == "int"
    return False


def _expect_result(layer, entry, new_args, how) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _call(layer, entry, new_args)
    if how == "other float" and entry in ("forward", "__call__"):
        assert got[0].dtype == np.float32, "a float32 input came out cast"
    if how in ("nan", "inf"):
        return  # propagated (no refusal, no warning); the values are torch's IEEE ones
    if "generator" in layer.get_extra_state() or getattr(layer, "training", False):
        return  # a random mask or running statistics moved: the two calls differ by design
    plain = [np.array(a) if isinstance(a, np.ndarray) else a for a in new_args]
    _same(got, _call(layer, entry, plain))


def _expect_refusal(layer, entry, new_args, name, how) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises((TypeError, ValueError)) as caught:
            _call(layer, entry, new_args)
    _check_refusal(caught.value, name, how, entry, layer)


#: a view's rank fault is named by torch's dim argument it does not fit (torch's message)
DIM_NAMED = {"Flatten": "start_dim", "Unflatten": "dim"}


def _check_refusal(error: BaseException, name: str, how: str, entry: str, layer: Any) -> None:
    message = str(error)
    assert _ours(error), f"{how} at {entry}({name}): not manual_bp's own raise: {message!r}"
    assert "\n" not in message.strip(), message
    named = _names_the_argument(message, name)
    dim = DIM_NAMED.get(type(layer).__name__)
    named = named or (how in SHAPED and dim is not None and f"{dim}=" in message)
    assert named, f"{how} at {entry}: {message!r} omits {name!r}"


def _check_empty(layer: Any, entry: str, x: np.ndarray) -> None:
    """An empty batch: an empty output and zero parameter gradients, as torch."""
    empty = x[:0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, cache = layer.forward(empty)
        assert out.shape[0] == 0
        dx, grads = layer.backward(np.zeros(out.shape, out.dtype), cache)
    assert dx is None or (isinstance(dx, tuple) or dx.shape == empty.shape)
    for key, g in grads.items():
        assert g.shape == layer.params[key].shape and not g.any(), key


# ---------------------------------------------------------------------- models
def _models() -> dict[str, Any]:
    from manual_bp import GPT, GPTConfig, Network, Sequential

    spec = [("dense", (4,), {}), "relu", ("dense", (3,), {}), "softmax"]
    config = GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=2, n_embd=4)
    return {
        "Sequential": lambda: Sequential.from_spec(spec, input_shape=(5,), seed=0),
        "Network": lambda: Network([5, 4, 3], seed=0),
        "GPT": lambda: GPT(config, seed=0),
    }


#: the arguments that carry data, in every model method's signature
DATA_ARGUMENTS = {"x", "y", "out", "targets", "dout", "idx"}
#: public model methods without a data argument (structure, state, construction)
MODEL_NOT_ENTRIES = {
    "append", "children", "copy", "eval", "from_config", "from_network", "from_spec",
    "get_config", "load_state_dict", "modules", "named_buffers", "named_children",
    "named_layers", "named_modules", "named_parameters", "parameter_arrays", "parameters",
    "regularized_indices", "reset_parameters", "same_place", "state_dict", "train",
    "prepare_targets", "check_batch_array", "fused_step_refusal",
}  # fmt: skip


def model_entries(model: Any) -> dict[str, list[str]]:
    """Public methods of ``model`` with a data argument -> the names of those arguments."""
    found = {}
    for name, method in inspect.getmembers(model, inspect.ismethod):
        if name.startswith("_"):
            continue
        data = [p for p in inspect.signature(method).parameters if p in DATA_ARGUMENTS]
        if data:
            found[name] = data
    return found


def test_every_public_model_method_is_covered():
    """Every public method of every model takes a data argument the strategy drives or is a
    listed non-entry: a new method fails here until covered."""
    for make in _models().values():
        model = make()
        publics = {n for n, _ in inspect.getmembers(model, inspect.ismethod) if n[0] != "_"}
        unknown = publics - set(model_entries(model)) - MODEL_NOT_ENTRIES
        assert not unknown, f"{type(model).__name__}: methods not covered: {sorted(unknown)}"


def _model_arguments(model: Any, method: str, rng) -> dict[str, Any]:
    x = rng.standard_normal((4, 5))
    y = np.array([0, 1, 2, 1])
    if getattr(model, "config", None) is not None:  # a GPT: token indices in, next tokens out
        x, y = rng.integers(0, 5, (4, 3)), rng.integers(0, 5, (4, 3))
    out = model.infer(x)
    values = {"x": x, "y": y, "out": out, "targets": model.prepare_targets(y, 4)}
    values["dout"] = rng.standard_normal(out.shape)
    values["idx"] = x
    if method == "backprop_single":
        values["x"], values["y"] = x[0], values["targets"][0]
    return values


MODEL_HOSTILE = ("complex", "bool", "object", "str", "datetime", "None", "scalar", "rank+1",
                 "nested list", "nan", "float labels", "empty batch")  # fmt: skip


@pytest.mark.parametrize("model_name", sorted(_models()))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_inputs_to_every_model_method(model_name, data):
    """Every public model method: a result, or one TypeError/ValueError of manual_bp naming
    the argument (float class labels: Network's message about integer labels); no warning."""
    model = _models()[model_name]()
    entries_found = model_entries(model)
    method = data.draw(st.sampled_from(sorted(entries_found)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    values = _model_arguments(model, method, rng)
    names = list(inspect.signature(getattr(model, method)).parameters)
    args = {}
    for n in names:
        if n in values:
            args[n] = values[n]
        elif n == "caches":
            args[n] = model._stack_forward(values["x"])[1]
        elif n == "batch":
            args[n] = 4
        elif n == "max_new_tokens":  # GPT.generate: its scalars are driven in test_gpt_hostile
            args[n] = 2
    target = data.draw(st.sampled_from(entries_found[method]))
    how = data.draw(st.sampled_from(MODEL_HOSTILE))
    value = args[target]
    if how == "float labels":
        if value.ndim != 1 or value.dtype.kind not in "iu":
            return
        hostile = value.astype(float)
    elif how == "empty batch":
        hostile = value[:0]
    else:
        hostile = _hostile(value, how, value.dtype if value.dtype.kind == "f" else None)
    args[target] = hostile
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            getattr(model, method)(**args)
    except (TypeError, ValueError) as error:
        message = str(error)
        assert _ours(error), f"{how} at {method}({target}): not manual_bp's raise: {message!r}"
        assert "\n" not in message.strip(), message
        if how == "float labels":
            assert "integer" in message, message
        named = _names_the_argument(message, target) or f"{target} " in message
        assert named, f"{how} at {method}: {message!r} omits {target!r}"
    else:
        refused = ("complex", "bool", "object", "str", "datetime", "None", "scalar")
        assert how not in refused, f"{method} took {how} {target}"
        assert how != "float labels", f"{method} took float class labels"
