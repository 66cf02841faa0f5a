"""Every model saves, loads and copies (issue 23, item 3): one property test over EVERY layer
class of the registry (``manual_bp.LAYERS``) in random configurations and random stacks.

:data:`BUILDERS` holds one drawing function per registered class (what shape it takes, its
options drawn at random); a registered class without one fails
:func:`test_the_strategy_covers_every_registered_layer`, so the next layer cannot be forgotten.
The test is parametrized by the class to cover (every class, every run); an example puts
it at a random place of a random stack of the data kind it takes, a cost and its options, a
dtype and a mode per layer, takes one training step (running statistics and generators move),
then round-trips the model through JSON, ``.npz`` and ``copy()`` and compares bit for bit:
config, every hyper-parameter attribute of every layer (also those ``get_config`` might
forget), the cost and its options, names, parameters, buffers, modes, generator states, then
outputs, costs and gradients of the next step and the state after it. ``Network`` files too.
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_bp as mb
from manual_bp import LAYERS, Network, Sequential, load, save
from manual_bp.layers.containers import stack_forward

Shape = tuple[int, ...]
#: the registered classes by class name (``L["Identity"]`` is the activation, not the layer)
L = {cls.__name__: cls for cls in LAYERS.classes()}
# kind of per-sample input a class takes: "features" (D,), "images" (C, H, W), "sequences"
# (T, D), "tokens" (T,) integer indices, "any" (every shape)
Builder = Callable[[Any, Shape], Any]

ACTIVATIONS = (
    ("relu", {}),
    ("tanh", {}),
    ("sigmoid", {}),
    ("elu", {"alpha": st.sampled_from([0.5, 1.0, 1.7])}),
    ("leaky-relu", {"alpha": st.sampled_from([0.01, 0.2])}),
    ("softplus", {"beta": st.sampled_from([0.5, 2.0]), "threshold": st.sampled_from([5.0, 20.0])}),
    ("gelu", {"approximate": st.sampled_from(["none", "tanh"])}),
    ("hardtanh", {"min_val": st.just(-0.5), "max_val": st.sampled_from([0.5, 2.0])}),
    ("silu", {}),
    ("selu", {}),
)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _kwargs(cls: type, **extra: Any) -> dict[str, Any]:
    """``extra`` plus ``batch_first=True`` where the class takes it (the model is batch-first
    whatever the layer's own default)."""
    if "batch_first" in inspect.signature(cls.__init__).parameters:
        extra["batch_first"] = True
    return extra


def _seed(draw) -> int:
    return draw(st.integers(0, 2**31 - 1))


def _activation(draw, shape: Shape):
    name, options = draw(st.sampled_from(ACTIVATIONS))
    return L["ActivationLayer"]({"name": name, **{k: draw(v) for k, v in options.items()}})


def _dense(draw, shape: Shape):
    return L["Dense"](
        shape[-1],
        draw(st.integers(1, 4)),
        bias=draw(st.booleans()),
        weight_init=draw(st.sampled_from(["torch", "xavier-uniform", "kaiming-normal", "nielsen"])),
        seed=_seed(draw),
    )


def _batchnorm(cls_name: str) -> Builder:
    def build(draw, shape: Shape):
        return L[cls_name](
            shape[0],
            eps=draw(st.sampled_from([1e-5, 1e-3])),
            momentum=draw(st.sampled_from([0.1, 0.5, None])),
            affine=draw(st.booleans()),
            track_running_stats=draw(st.booleans()),
            bias=draw(st.booleans()),
        )

    return build


def _layernorm(draw, shape: Shape):
    size = shape[-draw(st.integers(1, len(shape))) :]
    return L["LayerNorm"](
        size if len(size) > 1 else size[0],
        eps=draw(st.sampled_from([1e-5, 1e-2])),
        elementwise_affine=draw(st.booleans()),
        bias=draw(st.booleans()),
    )


def _dropout(cls: type) -> Builder:
    def build(draw, shape: Shape):
        return cls(draw(st.sampled_from([0.0, 0.25, 0.5])), seed=_seed(draw))

    return build


def _conv2d(draw, shape: Shape):
    c, h, w = shape
    groups = draw(st.sampled_from([g for g in (1, 2) if c % g == 0]))
    kernel = draw(st.integers(1, min(h, w, 3)))
    padding = draw(st.integers(0, min(1, h - 1, w - 1)))  # reflect needs padding < size
    return L["Conv2d"](
        c,
        groups * draw(st.integers(1, 2)),
        kernel,
        stride=draw(st.integers(1, 2)),
        padding=padding,
        groups=groups,
        bias=draw(st.booleans()),
        padding_mode=draw(st.sampled_from(PADDING_MODES)),
        seed=_seed(draw),
    )


#: torch's four padding modes: every one is a hyper-parameter the round trip must keep.
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _conv_transpose2d(draw, shape: Shape):
    stride = draw(st.integers(1, 2))
    return L["ConvTranspose2d"](
        shape[0],
        draw(st.integers(1, 2)),
        draw(st.integers(1, 3)),
        stride=stride,
        output_padding=draw(st.integers(0, stride - 1)),
        bias=draw(st.booleans()),
        seed=_seed(draw),
    )


def _conv1d(draw, shape: Shape):
    c, length = shape
    return L["Conv1d"](
        c,
        draw(st.integers(1, 3)),
        draw(st.integers(1, min(length, 3))),
        stride=draw(st.integers(1, 2)),
        padding=draw(st.integers(0, 1)),
        bias=draw(st.booleans()),
        seed=_seed(draw),
    )


def _pool(cls: type) -> Builder:
    def build(draw, shape: Shape):
        kernel = draw(st.integers(1, min((*shape[1:], 2))))
        options = {"stride": draw(st.sampled_from([None, 1])), "padding": 0}
        options["padding"] = draw(st.integers(0, kernel // 2))
        options["ceil_mode"] = draw(st.booleans())
        if cls.__name__.startswith("AvgPool"):
            options["count_include_pad"] = draw(st.booleans())
            if cls.__name__ != "AvgPool1d":  # torch's AvgPool1d has no divisor_override
                options["divisor_override"] = draw(st.sampled_from([None, 3]))
        else:  # MaxPool: the indices are torch's second output, the stack uses the first
            options["return_indices"] = draw(st.booleans())
        return cls(kernel, **options)

    return build


def _recurrent(cls: type) -> Builder:
    def build(draw, shape: Shape):
        options = {
            "num_layers": draw(st.integers(1, 2)),
            "bias": draw(st.booleans()),
            "bidirectional": draw(st.booleans()),
            "dropout": draw(st.sampled_from([0.0, 0.5])),  # a generator to save when > 0
            "seed": _seed(draw),
        }
        hidden = draw(st.integers(2, 3))
        if cls is L["RNN"]:
            options["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
        if cls is L["LSTM"]:
            options["proj_size"] = draw(st.integers(0, hidden - 1))
        return cls(shape[-1], hidden, **_kwargs(cls, **options))

    return build


def _attention(draw, shape: Shape):
    E = shape[-1]
    heads = draw(st.sampled_from([h for h in (1, 2) if E % h == 0]))
    return L["MultiheadAttention"](
        E,
        heads,
        **_kwargs(
            L["MultiheadAttention"],
            dropout=draw(st.sampled_from([0.0, 0.5])),
            bias=draw(st.booleans()),
            add_bias_kv=draw(st.booleans()),
            add_zero_attn=draw(st.booleans()),
            causal=draw(st.booleans()),
            seed=_seed(draw),
        ),
    )


def _unflatten(draw, shape: Shape):
    divisor = draw(st.sampled_from([d for d in range(1, shape[0] + 1) if shape[0] % d == 0]))
    return L["Unflatten"](1, (divisor, shape[0] // divisor))


def _embedding(draw, shape: Shape):
    return L["Embedding"](
        VOCABULARY,
        draw(st.integers(1, 3)),
        padding_idx=draw(st.sampled_from([None, 0, 2])),
        seed=_seed(draw),
    )


def _reshape(draw, shape: Shape):
    size = int(np.prod(shape))
    divisors = [d for d in range(1, size + 1) if size % d == 0]
    first = draw(st.sampled_from(divisors))
    return L["Reshape"](first, size // first)


def _residual(draw, shape: Shape):
    inner = [
        draw(st.sampled_from([_activation, _identity_like]))(draw, shape)
        for _ in range(draw(st.integers(1, 2)))
    ]
    if len(shape) == 1 and draw(st.booleans()):
        inner.insert(0, L["Dense"](shape[0], shape[0], seed=_seed(draw)))
    return L["Residual"](inner)


def _identity_like(draw, shape: Shape):
    return L["Identity"]()


VOCABULARY = 6


def _groupnorm(draw, shape: Shape):
    c = shape[0]
    groups = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
    return L["GroupNorm"](
        groups, c, eps=draw(st.sampled_from([1e-5, 1e-3])), affine=draw(st.booleans()),
        bias=draw(st.booleans()),
    )  # fmt: skip


def _instancenorm(cls_name: str) -> Builder:
    def build(draw, shape: Shape):
        if math.prod(shape[1:]) < 2:  # one position after pooling: instance statistics need
            return _groupnorm(draw, shape)  # two (torch); group norm's do not
        return L[cls_name](
            shape[0], eps=draw(st.sampled_from([1e-5, 1e-3])),
            momentum=draw(st.sampled_from([0.1, 0.5, None])), affine=draw(st.booleans()),
            track_running_stats=draw(st.booleans()), bias=draw(st.booleans()),
        )  # fmt: skip

    return build


def _rmsnorm(draw, shape: Shape):
    size = shape[-draw(st.integers(1, len(shape))) :]
    return L["RMSNorm"](
        size if len(size) > 1 else size[0], eps=draw(st.sampled_from([None, 1e-5, 1e-2])),
        elementwise_affine=draw(st.booleans()),
    )  # fmt: skip


def _lrn(draw, shape: Shape):
    return L["LocalResponseNorm"](
        draw(st.integers(1, shape[0] + 2)), alpha=draw(st.sampled_from([1e-4, 0.5])),
        beta=draw(st.sampled_from([0.75, 1.5])), k=draw(st.sampled_from([1.0, 2.0])),
    )  # fmt: skip


def _cell(cls: type) -> Builder:
    def build(draw, shape: Shape):
        options = {"bias": draw(st.booleans()), "seed": _seed(draw)}
        if cls is L["RNNCell"]:
            options["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
        return cls(shape[-1], draw(st.integers(2, 3)), **_kwargs(cls, **options))

    return build


def _conv3d(draw, shape: Shape):
    c, *size = shape
    groups = draw(st.sampled_from([g for g in (1, 2) if c % g == 0]))
    return L["Conv3d"](
        c, groups * draw(st.integers(1, 2)), draw(st.integers(1, min(*size, 2))),
        stride=draw(st.integers(1, 2)),
        padding=draw(st.integers(0, min(1, *(s - 1 for s in size)))),  # reflect: < size
        groups=groups, bias=draw(st.booleans()),
        padding_mode=draw(st.sampled_from(PADDING_MODES)), seed=_seed(draw),
    )  # fmt: skip


def _conv_transpose(name: str) -> Builder:
    def build(draw, shape: Shape):
        stride = draw(st.integers(1, 2))
        return L[name](
            shape[0], draw(st.integers(1, 2)), draw(st.integers(1, 3)), stride=stride,
            output_padding=draw(st.integers(0, stride - 1)), bias=draw(st.booleans()),
            seed=_seed(draw),
        )  # fmt: skip

    return build


def _lazy(name: str, eager: Builder) -> Builder:
    """The eager builder's options on the lazy class, materialised by the shape."""

    def build(draw, shape: Shape):
        config = eager(draw, shape).get_config()
        del config["name"], config["in_channels"]
        return L[name](**config, seed=_seed(draw)).materialize(shape)

    return build


def _adaptive(cls: type) -> Builder:
    def build(draw, shape: Shape):
        sizes = [1, 2, None] if len(shape) > 2 else [1, 2, 3]
        output = tuple(draw(st.sampled_from(sizes)) for _ in shape[1:])
        options = {"return_indices": draw(st.booleans())} if "Max" in cls.__name__ else {}
        return cls(output if len(output) > 1 else output[0], **options)

    return build


def _lppool(cls: type) -> Builder:
    def build(draw, shape: Shape):
        kernel = draw(st.integers(1, min((*shape[1:], 2))))
        stride = draw(st.sampled_from([None, 1]))
        return cls(draw(st.sampled_from([1, 2, 2.0])), kernel, stride, draw(st.booleans()))

    return build


def _fractional(cls: type) -> Builder:
    def build(draw, shape: Shape):
        slack = len(shape) - 3  # torch: O + k − 1 ≤ S in 2-d, < S in 3-d
        smallest = min(shape[1:])
        if smallest - slack < 1:  # a one-wide volume: no 3-d fractional pooling fits
            return L["AdaptiveMaxPool3d"](1)
        kernel = draw(st.integers(1, min(smallest - slack, 2)))
        ratio = smallest // 2 >= 1 and smallest // 2 + kernel - 1 + slack <= smallest
        target = (
            {"output_ratio": 0.5}
            if ratio and draw(st.booleans())
            else {"output_size": draw(st.integers(1, smallest - kernel + 1 - slack))}
        )
        return cls(kernel, **target, return_indices=draw(st.booleans()), seed=_seed(draw))

    return build


def _pad(cls_name: str) -> Builder:
    """A padding layer of the per-sample shape's last ``dims`` axes within torch's limits
    (reflect < size, circular <= size; zero/constant/circular may crop one entry)."""

    def build(draw, shape: Shape):
        cls = L[cls_name]
        pads = []
        for s in shape[len(shape) - cls.dims :]:
            hi = {"reflect": s - 1, "circular": s}.get(cls.mode, 2)
            lo = -1 if s > 1 and cls.mode in ("zeros", "circular") else 0
            a = draw(st.integers(lo, hi))
            b = draw(st.integers(0, hi + min(a, 0) if cls.mode == "circular" else hi))
            pads.append((a, b))  # circular: once round the cropped axis
        padding = tuple(p for a, b in reversed(pads) for p in (a, b))
        if cls_name.startswith("Constant"):
            return cls(padding, draw(st.sampled_from([0.0, -1.5, 2.0])))
        return cls(padding)

    return build


def _bilinear(draw, shape: Shape):
    """The quadratic form of a stack: Bilinear(D, D, k) (input2 = input1)."""
    size = shape[-1]
    return L["Bilinear"](size, size, draw(st.integers(1, 3)), bias=draw(st.booleans()),
                         seed=_seed(draw))  # fmt: skip


PAD_BUILDERS = {
    f"{kind}Pad{d}d": (
        (("sequences",), ("images",), ("images", "volumes"))[d - 1],
        _pad(f"{kind}Pad{d}d"),
    )
    for kind in ("Zero", "Constant", "Reflection", "Replication", "Circular")
    for d in (1, 2, 3)
}


def _transformer(cls_name: str) -> Builder:
    def build(draw, shape: Shape):
        E = shape[-1]
        options = dict(
            dim_feedforward=draw(st.integers(1, 4)), dropout=draw(st.sampled_from([0.0, 0.5])),
            activation=draw(st.sampled_from(["relu", "gelu"])), norm_first=draw(st.booleans()),
            bias=draw(st.booleans()), batch_first=True,
        )  # fmt: skip
        heads = draw(st.sampled_from([h for h in (1, 2) if E % h == 0]))
        seed = _seed(draw)
        if cls_name == "Transformer":
            return L["Transformer"](E, heads, 1, 1, **options, seed=seed)
        encoder = cls_name in ("TransformerEncoderLayer", "TransformerEncoder")
        inner = "TransformerEncoderLayer" if encoder else "TransformerDecoderLayer"
        layer = L[inner](E, heads, **options, seed=seed)
        if cls_name == inner:
            return layer
        norm = L["LayerNorm"](E) if draw(st.booleans()) else None
        return L[cls_name](layer, draw(st.integers(1, 2)), norm, seed=seed)

    return build


def _glu(draw, shape: Shape):
    from hypothesis import assume

    even = [axis for axis, size in enumerate(shape) if size % 2 == 0]
    assume(even)  # GLU halves an even axis
    axis = draw(st.sampled_from(even))
    return L["GLU"](draw(st.sampled_from([axis + 1, axis - len(shape)])))


def _prelu(draw, shape: Shape):
    layer = L["PReLU"](draw(st.sampled_from([1, shape[0]])), draw(st.sampled_from([0.25, -0.5])))
    layer.params["weight"][...] = draw(st.floats(-2, 2))
    return layer


def _rrelu(draw, shape: Shape):
    lower = draw(st.sampled_from([1 / 8, 0.0, 0.3]))
    return L["RReLU"](lower, lower + draw(st.sampled_from([0.0, 0.2])), seed=_seed(draw))


#: class name -> (the kinds of input it takes, its drawing function)
BUILDERS: dict[str, tuple[tuple[str, ...], Builder]] = {
    "ActivationLayer": (("any",), _activation),
    "AdaptiveAvgPool2d": (
        ("images",),
        lambda draw, shape: L["AdaptiveAvgPool2d"](
            draw(st.sampled_from([1, 2, (2, None), (None, 1), (3, 2)]))
        ),
    ),
    "AvgPool2d": (("images",), _pool(L["AvgPool2d"])),
    "BatchNorm1d": (("features",), _batchnorm("BatchNorm1d")),
    "BatchNorm2d": (("images",), _batchnorm("BatchNorm2d")),
    "Conv1d": (("sequences",), _conv1d),
    "Conv2d": (("images",), _conv2d),
    "ConvTranspose2d": (("images",), _conv_transpose2d),
    "Dense": (("features", "sequences"), _dense),
    "Dropout": (("any",), _dropout(L["Dropout"])),
    "Dropout2d": (("images",), _dropout(L["Dropout2d"])),
    "Embedding": (("tokens",), _embedding),
    "Flatten": (("any",), lambda draw, shape: L["Flatten"]()),
    "GRU": (("sequences",), _recurrent(L["GRU"])),
    "GlobalAvgPool2d": (("images",), lambda draw, shape: L["GlobalAvgPool2d"]()),
    "Identity": (("any",), _identity_like),
    "LSTM": (("sequences",), _recurrent(L["LSTM"])),
    "LayerNorm": (("features", "sequences", "images"), _layernorm),
    "MaxPool2d": (("images",), _pool(L["MaxPool2d"])),
    "MultiheadAttention": (("sequences",), _attention),
    "Unflatten": (("features",), _unflatten),
    "Bilinear": (("features", "sequences"), _bilinear),
    "GLU": (("sequences", "images"), _glu),  # not "features": (3,) has no even axis
    "PReLU": (("any",), _prelu),
    "RReLU": (("any",), _rrelu),
    "Softmax2d": (("images",), lambda draw, shape: L["Softmax2d"]()),
    **{
        name: (("sequences",), _transformer(name))
        for name in (
            "TransformerEncoderLayer",
            "TransformerDecoderLayer",
            "TransformerEncoder",
            "TransformerDecoder",
            "Transformer",
        )
    },
    **PAD_BUILDERS,
    "AdaptiveAvgPool1d": (("sequences",), _adaptive(L["AdaptiveAvgPool1d"])),
    "AdaptiveMaxPool1d": (("sequences",), _adaptive(L["AdaptiveMaxPool1d"])),
    "AdaptiveAvgPool3d": (("volumes",), _adaptive(L["AdaptiveAvgPool3d"])),
    "AdaptiveMaxPool3d": (("volumes",), _adaptive(L["AdaptiveMaxPool3d"])),
    "AdaptiveMaxPool2d": (("images",), _adaptive(L["AdaptiveMaxPool2d"])),
    "AvgPool1d": (("sequences",), _pool(L["AvgPool1d"])),
    "MaxPool1d": (("sequences",), _pool(L["MaxPool1d"])),
    "AvgPool3d": (("volumes",), _pool(L["AvgPool3d"])),
    "MaxPool3d": (("volumes",), _pool(L["MaxPool3d"])),
    "FractionalMaxPool2d": (("images",), _fractional(L["FractionalMaxPool2d"])),
    "FractionalMaxPool3d": (("volumes",), _fractional(L["FractionalMaxPool3d"])),
    "LPPool1d": (("sequences",), _lppool(L["LPPool1d"])),
    "LPPool2d": (("images",), _lppool(L["LPPool2d"])),
    "LPPool3d": (("volumes",), _lppool(L["LPPool3d"])),
    "Conv3d": (("volumes",), _conv3d),
    "ConvTranspose1d": (("sequences",), _conv_transpose("ConvTranspose1d")),
    "ConvTranspose3d": (("volumes",), _conv_transpose("ConvTranspose3d")),
    "LazyConv1d": (("sequences",), _lazy("LazyConv1d", _conv1d)),
    "LazyConv2d": (("images",), _lazy("LazyConv2d", _conv2d)),
    "LazyConv3d": (("volumes",), _lazy("LazyConv3d", _conv3d)),
    "LazyConvTranspose1d": (
        ("sequences",),
        _lazy("LazyConvTranspose1d", _conv_transpose("ConvTranspose1d")),
    ),
    "LazyConvTranspose2d": (
        ("images",),
        _lazy("LazyConvTranspose2d", _conv_transpose("ConvTranspose2d")),
    ),
    "LazyConvTranspose3d": (
        ("volumes",),
        _lazy("LazyConvTranspose3d", _conv_transpose("ConvTranspose3d")),
    ),
    "RNNCell": (("features",), _cell(L["RNNCell"])),
    "LSTMCell": (("features",), _cell(L["LSTMCell"])),
    "GRUCell": (("features",), _cell(L["GRUCell"])),
    "BatchNorm3d": (("volumes",), _batchnorm("BatchNorm3d")),
    "GroupNorm": (("sequences", "images"), _groupnorm),
    "InstanceNorm1d": (("sequences",), _instancenorm("InstanceNorm1d")),
    "InstanceNorm2d": (("images",), _instancenorm("InstanceNorm2d")),
    "InstanceNorm3d": (("volumes",), _instancenorm("InstanceNorm3d")),
    "LocalResponseNorm": (("sequences", "images"), _lrn),
    "RMSNorm": (("features", "sequences", "images"), _rmsnorm),
    "RNN": (("sequences",), _recurrent(L["RNN"])),
    "Reshape": (("features", "sequences", "images"), _reshape),
    "Residual": (("features", "sequences", "images"), _residual),
}

#: a starting shape per kind (and a layer leading to it, for tokens)
STARTS: dict[str, Callable[[Any], Shape]] = {
    "features": lambda draw: (draw(st.integers(1, 4)),),
    "images": lambda draw: (
        draw(st.integers(1, 2)),
        draw(st.integers(3, 5)),
        draw(st.integers(3, 5)),
    ),
    "sequences": lambda draw: (draw(st.integers(2, 4)), draw(st.integers(2, 4))),
    "tokens": lambda draw: (draw(st.integers(2, 4)),),
    "volumes": lambda draw: (draw(st.integers(1, 2)), *(draw(st.integers(2, 3)) for _ in range(3))),
}


def _kind(shape: Shape) -> str:
    return {1: "features", 2: "sequences", 3: "images", 4: "volumes"}.get(len(shape), "other")


def _fits(name: str, kind: str) -> bool:
    kinds = BUILDERS[name][0]
    return "any" in kinds or kind in kinds


def test_the_strategy_covers_every_registered_layer():
    registered = {cls.__name__ for cls in LAYERS.classes()}
    missing = registered - set(BUILDERS)
    assert not missing, f"layer classes the save/load property test does not draw: {missing}"
    assert not set(BUILDERS) - registered, "BUILDERS names a class the registry does not have"


# ---------------------------------------------------------------------- the models
COSTS = (
    ("quadratic", None, {}),
    ("huber", None, {"threshold": st.sampled_from([0.5, 1.0, 2.5])}),
    ("smooth-l1", None, {"beta": st.sampled_from([0.5, 1.0])}),
    ("mae", None, {}),
    ("cross-entropy", "sigmoid", {}),
    ("bce-logits", None, {}),
    ("log-likelihood", "softmax", {}),
    ("poisson-nll", None, {"log_input": st.just(True), "eps": st.sampled_from([1e-8, 1e-6])}),
)


#: layers that keep a shape's kind: the fillers placed before the class to cover
KEEPS_KIND = ("ActivationLayer", "Dropout", "Identity", "Residual", "LayerNorm")


@st.composite
def models(draw, target: str | None = None) -> tuple[Sequential, np.ndarray, np.ndarray, str]:
    """``(model, x, y, covered class)``: a random stack holding ``target`` (drawn if None)."""
    target = target or draw(st.sampled_from(sorted(BUILDERS)))
    kinds = BUILDERS[target][0]
    any_kind = ["features", "images", "sequences", "volumes"]
    kind = draw(st.sampled_from(any_kind if "any" in kinds else kinds))
    shape = input_shape = STARTS[kind](draw)
    if kind == "tokens":
        plan = [target] + [None] * draw(st.integers(0, 1))
    else:
        before = [draw(st.sampled_from(KEEPS_KIND)) for _ in range(draw(st.integers(0, 1)))]
        plan = [*before, target] + [None] * draw(st.integers(0, 1))
    layers = []
    for item in plan:
        if item is None:
            here = _kind(shape)
            item = draw(st.sampled_from([n for n in sorted(BUILDERS) if _fits(n, here)]))
        layer = BUILDERS[item][1](draw, shape)
        layers.append(layer)
        shape = tuple(layer.output_shape(shape))
    cost, activation, options = draw(st.sampled_from(COSTS))
    cost_config = {"name": cost, **{k: draw(v) for k, v in options.items()}}
    if activation is not None:
        if len(shape) > 1:
            layers.append(L["Flatten"]())
        layers.append(L["ActivationLayer"](activation))
    else:  # a cost on logits (bce-logits, poisson-nll with log_input) needs no activation
        valid = mb.costs.get_cost(cost_config).valid_output_activations
        last = layers[-1]
        if (
            valid is not None
            and getattr(getattr(last, "activation", None), "name", None) not in valid
        ):
            layers.append(L["ActivationLayer"](valid[0]))
    names = draw(st.booleans())
    container = OrderedDict((f"l{i}", layer) for i, layer in enumerate(layers)) if names else layers
    model = Sequential(
        container,
        cost=cost_config,
        input_shape=input_shape,
        dtype=draw(st.sampled_from([np.float64, np.float32])),
        seed=draw(st.sampled_from([None, 0, 7])),
    )
    rng = np.random.default_rng(_seed(draw))
    batch = draw(st.integers(2, 3))  # batch norm in training needs two values, as torch
    if kind == "tokens":
        x = rng.integers(0, VOCABULARY, (batch, *input_shape)).astype(float)
    else:
        x = rng.standard_normal((batch, *input_shape))
    out_shape = model.output_shape
    if cost == "log-likelihood":
        y = rng.integers(0, out_shape[-1], (batch, *out_shape[:-1]))
    elif cost in ("cross-entropy", "bce-logits"):
        y = rng.uniform(0, 1, (batch, *out_shape))
    elif cost == "poisson-nll":
        y = rng.integers(0, 3, (batch, *out_shape)).astype(float)
    else:
        y = rng.standard_normal((batch, *out_shape))
    return model, x, y, target


# ---------------------------------------------------------------------- comparisons
def _plain(value: Any) -> bool:
    if isinstance(value, (bool, int, float, str, type(None), np.dtype, np.number)):
        return True
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    return False


def _hyperparameters(obj: Any) -> dict[str, Any]:
    """Every plain attribute (numbers, strings, tuples …) and the config of every component
    attribute (activation, cost, cell), as repr: bit for bit for floats."""
    found = {}
    for key, value in vars(obj).items():
        if key in ("params", "buffers"):
            continue
        if _plain(value):
            found[key] = (type(value).__name__, repr(value))
        elif hasattr(value, "get_config") and not isinstance(value, mb.Layer):
            found[key] = repr(value.get_config())
    return found


def _describe(model: Sequential) -> dict[str, Any]:
    return {
        "type": type(model).__name__,
        "config": model.get_config(),
        "names": list(getattr(model, "names", [])),
        "cost": (_hyperparameters(model.cost), repr(model.cost.get_config())),
        "dtype": model.dtype,
        "ignore_index": model.ignore_index,
        "layers": {
            path: (type(layer).__name__, layer.training, _hyperparameters(layer))
            for path, layer in model.named_layers()
        },
        "extra": {path: layer.get_extra_state() for path, layer in model.named_layers()},
    }


def _same_state(a: Sequential, b: Sequential) -> None:
    assert _describe(a) == _describe(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and same_bits(sa[name], sb[name]), name


def _step(model: Sequential, x: np.ndarray, y: np.ndarray):
    """Output, cost, named gradients and input gradient in the model's current modes (moves
    running statistics and generators as training does)."""
    x, y = model.prepare_inputs(x), model.prepare_targets(y, len(x))
    with np.errstate(all="ignore"):
        if isinstance(model, Network):  # Nielsen's records; the same stack underneath
            out = stack_forward(model.layers, x)[0]
            cost, grads = model.loss_and_gradients(x, y)
            return out, cost, dict(zip(model._parameter_names, grads, strict=True)), None
        result = model.backprop(x, y)
    return result.output, result.cost, result.params, result.input_grad


def _round_trip(model: Sequential, how: str, directory) -> Sequential:
    return model.copy() if how == "copy" else load(save(model, directory / f"m{how}"))


def _check(model: Sequential, x, y, how: str, directory) -> None:
    _step(model, x, y)  # running statistics and generators away from their start
    clone = _round_trip(model, how, directory)
    assert type(clone) is type(model)
    _same_state(clone, model)
    a, b = _step(model, x, y), _step(clone, x, y)
    assert same_bits(a[0], b[0])
    assert np.array_equal(a[1], b[1], equal_nan=True)
    assert list(a[2]) == list(b[2])
    assert all(same_bits(a[2][k], b[2][k]) for k in a[2])
    assert (a[3] is None and b[3] is None) or same_bits(a[3], b[3])
    _same_state(clone, model)  # and the same buffers and generators after the step


HOWS = st.sampled_from([".json", ".npz", "copy"])


@pytest.mark.parametrize("target", sorted(BUILDERS))  # every class, every run
@settings(max_examples=25, deadline=None)
@given(data=st.data(), how=HOWS, modes=st.lists(st.booleans(), min_size=12, max_size=12))
def test_every_layer_saves_loads_and_copies_bit_for_bit(tmp_path_factory, target, data, how, modes):
    model, x, y, covered = data.draw(models(target))
    assert covered == target and any(type(layer).__name__ == target for layer in model.modules())
    for (_, layer), mode in zip(model.named_layers(), modes, strict=False):
        layer.training = mode
    _check(model, x, y, how, tmp_path_factory.mktemp("m"))


@settings(max_examples=30, deadline=None)
@given(data=st.data(), how=HOWS)
def test_every_network_saves_loads_and_copies_bit_for_bit(tmp_path_factory, data, how):
    from reference.cases import build_case
    from tests.strategies import network_specs

    spec = data.draw(network_specs(max_depth=3, max_width=5, max_batch=4))
    net, x, y = build_case(spec, dtype=data.draw(st.sampled_from([np.float64, np.float32])))
    assert isinstance(net, Network)
    net.train(data.draw(st.booleans()))
    _check(net, x, y, how, tmp_path_factory.mktemp("n"))


def test_the_comparison_sees_a_changed_hyperparameter():
    """Not blind: a hyper-parameter changed on the clone only (one the config names, one
    it does not, the cost's option) makes the comparison fail."""
    model = Sequential(
        L["Conv2d"](2, 2, 3, padding=1), L["Flatten"](), L["Dropout"](0.25), cost="huber"
    )
    changes = [
        lambda m: setattr(m.layers[0], "padding_mode", "circular"),
        lambda m: setattr(m.layers[2], "p", 0.5),
        lambda m: setattr(m.layers[0], "an_option_get_config_forgets", 1),
        lambda m: setattr(m.cost, "threshold", 2.0),
        lambda m: m.layers[1].eval(),
    ]
    for change in changes:
        clone = model.copy()
        change(clone)
        with pytest.raises(AssertionError):
            _same_state(model, clone)
