"""Move models between manual_bp and torch: ``from_torch(nn.Sequential)``, ``to_torch(model)``.

Parameters and buffers use the same names and layouts in both libraries (``"0.weight"``,
``"1.running_mean"``, …), so after the architecture is mapped module by module the state
dicts copy 1:1 and the round trip is exact. Check your own torch model's gradients against
the hand-derived ones in three lines::

    model = from_torch(torch_model, cost="log-likelihood", input_shape=(1, 28, 28))
    grads = model.backprop(x, y)                      # manual_bp, float64
    # compare grads.params["0.weight"] with torch_model[0].weight.grad

A module that has no manual_bp counterpart raises ``ValueError`` listing what is supported.

Sequence stacks: torch's recurrent modules return tuples (``out, h_n`` or ``out, (h_n, c_n)``)
and ``nn.MultiheadAttention`` takes three inputs, so they cannot sit in an ``nn.Sequential``
as they are. :class:`LSTMSequence`, :class:`GRUSequence`, :class:`RNNSequence` (subclasses of
``nn.LSTM/GRU/RNN`` with ``batch_first=True`` whose ``forward`` returns the output sequence
only) and :class:`SelfAttention` (``nn.MultiheadAttention`` called as ``x, x, x`` with
``need_weights=False``, optionally causal) are the stand-ins: their state-dict names are the
base modules', so parameters copy 1:1. ``from_torch`` also accepts the plain modules
(``batch_first=True``), which describe the same layer; ``to_torch`` returns the stand-ins.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from manual_bp.layers import LAYERS, ActivationLayer, Layer
from manual_bp.layers import Residual as ResidualLayer
from manual_bp.models.sequential import Sequential
from reference.interop_modules import (
    GRUSequence,
    LSTMSequence,
    Reshape,
    Residual,
    RNNSequence,
    SelfAttention,
)

__all__ = [
    "SUPPORTED",
    "GRUSequence",
    "LSTMSequence",
    "RNNSequence",
    "Reshape",
    "Residual",
    "SelfAttention",
    "from_torch",
    "to_torch",
    "torch_parameters",
]


#: manual_bp sequence layer name -> the torch stand-in that to_torch builds
_SEQUENCE_MODULES = {"lstm": LSTMSequence, "gru": GRUSequence, "rnn": RNNSequence}
_RNN_OPTIONS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                "bidirectional", "proj_size", "nonlinearity")  # fmt: skip

#: torch activation module -> (manual_bp activation name, hyper-parameter mapping)
_ACTIVATIONS: dict[type, tuple[str, Callable[[nn.Module], dict[str, Any]]]] = {
    nn.Identity: ("identity", lambda m: {}),
    nn.Sigmoid: ("sigmoid", lambda m: {}),
    nn.Tanh: ("tanh", lambda m: {}),
    nn.ReLU: ("relu", lambda m: {}),
    nn.LeakyReLU: ("leaky-relu", lambda m: {"alpha": m.negative_slope}),
    nn.ELU: ("elu", lambda m: {"alpha": m.alpha}),
    nn.SELU: ("selu", lambda m: {}),
    nn.Softplus: ("softplus", lambda m: {"beta": m.beta, "threshold": m.threshold}),
    nn.GELU: ("gelu", lambda m: {"approximate": m.approximate}),
    nn.SiLU: ("silu", lambda m: {}),
    nn.Hardtanh: ("hardtanh", lambda m: {"min_val": m.min_val, "max_val": m.max_val}),
    nn.Softmax: ("softmax", lambda m: {"dim": m.dim}),
    nn.Softmin: ("softmin", lambda m: {"dim": m.dim}),
    nn.LogSoftmax: ("log-softmax", lambda m: {"dim": m.dim}),
    nn.CELU: ("celu", lambda m: {"alpha": m.alpha}),
    nn.Hardshrink: ("hardshrink", lambda m: {"lambd": m.lambd}),
    nn.Hardsigmoid: ("hardsigmoid", lambda m: {}),
    nn.Hardswish: ("hardswish", lambda m: {}),
    nn.LogSigmoid: ("log-sigmoid", lambda m: {}),
    nn.Mish: ("mish", lambda m: {}),
    nn.ReLU6: ("relu6", lambda m: {}),
    nn.Softshrink: ("softshrink", lambda m: {"lambd": m.lambd}),
    nn.Softsign: ("softsign", lambda m: {}),
    nn.Tanhshrink: ("tanhshrink", lambda m: {}),
    nn.Threshold: ("threshold", lambda m: {"threshold": m.threshold, "value": m.value}),
}

#: torch module class name -> manual_bp layer name (hyper-parameters share torch's names)
_LAYERS = {
    "GLU": "glu",
    "PReLU": "prelu",
    "RReLU": "rrelu",
    "Softmax2d": "softmax2d",
    "Linear": "dense",
    "Conv1d": "conv1d",
    "Conv2d": "conv2d",
    "ConvTranspose2d": "conv-transpose2d",
    "MaxPool2d": "maxpool2d",
    "AvgPool2d": "avgpool2d",
    "AdaptiveAvgPool2d": "adaptive-avgpool2d",
    "BatchNorm1d": "batchnorm1d",
    "BatchNorm2d": "batchnorm2d",
    "LayerNorm": "layernorm",
    "Dropout": "dropout",
    "Dropout2d": "dropout2d",
    "Flatten": "flatten",
    "Unflatten": "unflatten",
    "BatchNorm3d": "batchnorm3d",
    "GroupNorm": "groupnorm",
    "InstanceNorm1d": "instancenorm1d",
    "InstanceNorm2d": "instancenorm2d",
    "InstanceNorm3d": "instancenorm3d",
    "RMSNorm": "rmsnorm",
    "LocalResponseNorm": "localresponsenorm",
    "Conv3d": "conv3d",
    "ConvTranspose1d": "conv-transpose1d",
    "ConvTranspose3d": "conv-transpose3d",
    "MaxPool1d": "maxpool1d",
    "MaxPool3d": "maxpool3d",
    "AvgPool1d": "avgpool1d",
    "AvgPool3d": "avgpool3d",
    "AdaptiveAvgPool1d": "adaptive-avgpool1d",
    "AdaptiveAvgPool3d": "adaptive-avgpool3d",
    "AdaptiveMaxPool1d": "adaptive-maxpool1d",
    "AdaptiveMaxPool2d": "adaptive-maxpool2d",
    "AdaptiveMaxPool3d": "adaptive-maxpool3d",
    "LPPool1d": "lppool1d",
    "LPPool2d": "lppool2d",
    "LPPool3d": "lppool3d",
    "ZeroPad1d": "zeropad1d",
    "ZeroPad2d": "zeropad2d",
    "ZeroPad3d": "zeropad3d",
    "ConstantPad1d": "constantpad1d",
    "ConstantPad2d": "constantpad2d",
    "ConstantPad3d": "constantpad3d",
    "ReflectionPad1d": "reflectionpad1d",
    "ReflectionPad2d": "reflectionpad2d",
    "ReflectionPad3d": "reflectionpad3d",
    "ReplicationPad1d": "replicationpad1d",
    "ReplicationPad2d": "replicationpad2d",
    "ReplicationPad3d": "replicationpad3d",
    "CircularPad1d": "circularpad1d",
    "CircularPad2d": "circularpad2d",
    "CircularPad3d": "circularpad3d",
    "RNNCell": "rnn_cell",  # a tensor out, as a layer's (LSTMCell returns a pair: not here)
    "GRUCell": "gru_cell",
    "Reshape": "reshape",
    "Embedding": "embedding",
    "LSTM": "lstm",
    "GRU": "gru",
    "RNN": "rnn",
    "LSTMSequence": "lstm",
    "GRUSequence": "gru",
    "RNNSequence": "rnn",
    "MultiheadAttention": "multihead_attention",
    "SelfAttention": "multihead_attention",
}

#: torch modules that can be mapped (those whose manual_bp layer is registered)
SUPPORTED = sorted(
    [cls.__name__ for cls in _ACTIVATIONS]
    + [name for name, layer in _LAYERS.items() if layer in LAYERS]
    + ["Residual", "Sequential", "TransformerEncoderLayer"]
)

#: constructor arguments that do not change the numbers (or are the tensor's own business)
_NEUTRAL_ARGS = {"self", "device", "dtype", "inplace", "_weight", "_freeze", "args", "kwargs"}

Shape = tuple[int, ...] | None
Pairs = list[tuple[Layer, nn.Module]]


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    return value


def _options(module: nn.Module) -> dict[str, tuple[Any, Any]]:
    """``{torch option: (its value, the value meaning manual_bp's behaviour without it)}``.

    An option the library's class takes is passed on; one it lacks must be at its neutral value.
    """
    if isinstance(module, nn.RNNBase):
        return {
            "dropout": (float(module.dropout), 0.0),
            "proj_size": (int(getattr(module, "proj_size", 0)), 0),
            "batch_first": (
                bool(module.batch_first),
                True,
            ),  # a Sequential is batch-major: time-major layers are refused there
        }
    if isinstance(module, nn.MultiheadAttention):
        return {
            "dropout": (float(module.dropout), 0.0),
            "batch_first": (bool(module.batch_first), True),
            "add_bias_kv": (module.bias_k is not None, False),
            "add_zero_attn": (bool(module.add_zero_attn), False),
            "kdim": (module.kdim, module.embed_dim),
            "vdim": (module.vdim, module.embed_dim),
        }
    options = {}
    for name, parameter in inspect.signature(type(module).__init__).parameters.items():
        if name in _NEUTRAL_ARGS or parameter.default is inspect.Parameter.empty:
            continue
        value = getattr(module, name, parameter.default)
        if name == "bias" and not isinstance(value, bool):
            # without an affine map (weight None too) the bias flag has nothing to say
            no_affine = value is None and getattr(module, "weight", 0) is None
            value = parameter.default if no_affine else value is not None
        options[name] = (_plain(value), _plain(parameter.default))
    return options


def _batch_axis(dim: int, shape: Shape) -> bool:
    """Whether torch's ``dim`` names the batch axis (of inputs of per-sample ``shape``)."""
    return dim == 0 or (shape is not None and dim % (len(shape) + 1) == 0)


def _layer_from_module(module: nn.Module, label: str, shape: Shape) -> Layer:
    activation = _ACTIVATIONS.get(type(module))
    if activation is not None:
        name, options = activation
        if name in ("softmax", "log-softmax", "softmin") and module.dim == 0:
            raise ValueError(
                f"{label}: a softmax along the batch axis (dim=0) couples the samples of a "
                "mini-batch: not expressible in a Sequential"
            )
        return ActivationLayer({"name": name, **options(module)})
    name = _LAYERS.get(type(module).__name__)
    if name is None or name not in LAYERS:
        raise ValueError(f"{label} has no manual_bp counterpart; supported: {', '.join(SUPPORTED)}")
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return LAYERS.lookup(name)(_plain(module.output_size))
    if isinstance(module, nn.Flatten):
        if module.start_dim == 0 or (
            shape is not None and module.start_dim % (len(shape) + 1) == 0
        ):
            raise ValueError(f"{label}: flattening the batch axis (start_dim=0) is not expressible")
        return LAYERS.lookup("flatten")(module.start_dim, module.end_dim)
    if isinstance(module, nn.Unflatten):
        if _batch_axis(module.dim, shape):
            raise ValueError(f"{label}: unflattening the batch axis (dim=0) is not expressible")
        return LAYERS.lookup("unflatten")(module.dim, tuple(_plain(module.unflattened_size)))
    if isinstance(module, Reshape):
        return LAYERS.lookup(name)(*module.shape)
    cls = LAYERS.lookup(name)
    kwargs: dict[str, Any] = {}
    for key, (value, neutral) in _options(module).items():
        if key in cls.hyperparameters:
            kwargs[key] = value
        elif value != neutral:
            raise ValueError(
                f"{label}: {key}={value!r} is not supported by manual_bp's {cls.__name__}"
            )
    for key in cls.hyperparameters:
        if key in kwargs or key in ("weight_init", "bias_init", "implementation"):
            continue
        if key == "bias" and isinstance(module, nn.MultiheadAttention):
            kwargs[key] = module.in_proj_bias is not None
        elif key == "bias" and isinstance(getattr(module, "bias", None), bool):
            kwargs[key] = module.bias  # nn.RNN/LSTM/GRU keep a flag, not a tensor
        elif key == "bias":
            kwargs[key] = getattr(module, "bias", None) is not None
        elif key == "causal":
            kwargs[key] = bool(getattr(module, "causal", False))
        elif hasattr(module, key):
            kwargs[key] = _plain(getattr(module, key))
    return cls(**kwargs)


def _activation_module(fn: Any, label: str) -> nn.Module:
    if isinstance(fn, nn.Module):
        return fn
    known = {F.relu: nn.ReLU, F.gelu: nn.GELU}
    if fn in known:
        return known[fn]()
    raise ValueError(f"{label}: activation {fn!r} has no manual_bp counterpart")


def _encoder_layer(
    module: nn.TransformerEncoderLayer, label: str, prefix: str, shape: Shape
) -> Pairs:
    """``nn.TransformerEncoderLayer`` as manual_bp's Residual/LayerNorm/Dense/attention layers.

    ``norm_first=False``: ``x ← LN₁(x + Drop(SA(x)))``, ``x ← LN₂(x + FF(x))``;
    ``norm_first=True``: ``x ← x + Drop(SA(LN₁(x)))``, ``x ← x + FF(LN₂(x))``, with
    ``FF = Drop₂ ∘ Linear₂ ∘ Drop ∘ act ∘ Linear₁`` (torch's ``_sa_block``/``_ff_block``).
    """
    act = _activation_module(module.activation, f"{label}.activation")
    attention = [module.self_attn, module.dropout1]
    feed = [module.linear1, act, module.dropout, module.linear2, module.dropout2]
    if module.norm_first:
        plan: list[Any] = [[module.norm1, *attention], [module.norm2, *feed]]
    else:
        plan = [attention, module.norm1, feed, module.norm2]
    pairs: Pairs = []
    for item in plan:
        sub = item if isinstance(item, list) else [item]
        branch = _pairs(sub, prefix, shape)
        if isinstance(item, list):
            layers = [layer for layer, _ in branch]
            pairs.append((ResidualLayer(layers), Residual(*(m for _, m in branch))))
        else:
            pairs += branch
    return pairs


def _pairs(modules: Sequence[nn.Module], prefix: str, shape: Shape) -> Pairs:
    """``(manual_bp layer, torch module holding its state under the layer's names)`` in order;
    nested ``nn.Sequential``s are inlined, ``Residual``s and encoder layers expanded."""
    pairs: Pairs = []
    for i, module in enumerate(modules):
        label = f"module {prefix}{i} ({type(module).__name__})"
        if type(module) is nn.Sequential:
            new = _pairs(list(module), f"{prefix}{i}.", shape)
        elif isinstance(module, Residual):
            branch = _pairs(list(module), f"{prefix}{i}.", shape)
            layer = ResidualLayer([layer for layer, _ in branch])
            new = [(layer, Residual(*(m for _, m in branch)))]
        elif isinstance(module, nn.TransformerEncoderLayer):
            new = _encoder_layer(module, label, f"{prefix}{i}.", shape)
        else:
            new = [(_layer_from_module(module, label, shape), module)]
        for layer, _ in new:
            try:
                shape = None if shape is None else tuple(layer.output_shape(shape))
            except (ValueError, TypeError, NotImplementedError):
                shape = None  # a layout the layer does not describe per sample: stop tracking
        pairs += new
    return pairs


def _as_sequential(module: nn.Module | Sequence[nn.Module]) -> Any:
    if isinstance(module, nn.Module) and not isinstance(module, nn.Sequential):
        if type(module).__name__ in SUPPORTED or type(module) in _ACTIVATIONS:
            return nn.Sequential(module).train(module.training)
        from reference.interop_fx import sequential_from_fx  # torch.fx only when needed

        return sequential_from_fx(module)
    return module


def from_torch(
    module: nn.Module | Sequence[nn.Module],
    *,
    cost: Any = "quadratic",
    input_shape: Sequence[int] | None = None,
    dtype: str = "float64",
) -> Sequential:
    """A :class:`Sequential` with the architecture, parameters, buffers and mode of ``module``.

    ``module``: an ``nn.Sequential`` (or a list of modules), one supported module, or any
    ``nn.Module`` subclass, which is traced with ``torch.fx`` (:mod:`reference.interop_fx`).
    ``input_shape`` (per sample) is needed to map ``Flatten``/``Unflatten`` of inner axes.
    """
    module = _as_sequential(module)
    modules = list(module)
    shape = None if input_shape is None else tuple(int(s) for s in input_shape)
    pairs = _pairs(modules, "", shape)
    model = Sequential([layer for layer, _ in pairs], cost, input_shape=input_shape, dtype=dtype)
    mirror = nn.Sequential(*(m for _, m in pairs))
    model.load_state_dict({k: v.detach().cpu().numpy() for k, v in mirror.state_dict().items()})
    training = module.training if isinstance(module, nn.Module) else modules[0].training
    model.train(training)
    return model


def torch_parameters(
    module: nn.Module | Sequence[nn.Module], *, input_shape: Sequence[int] | None = None
) -> dict[str, nn.Parameter]:
    """``module``'s parameters under the names ``from_torch(module)`` gives them (the same
    tensor objects: after ``backward`` their ``.grad`` compares with manual_bp's by name)."""
    modules = _as_sequential(module)
    shape = None if input_shape is None else tuple(int(s) for s in input_shape)
    mirror = nn.Sequential(*(m for _, m in _pairs(list(modules), "", shape)))
    return dict(mirror.named_parameters(remove_duplicate=False))


def _encoder_layer_module(layer: Any) -> nn.TransformerEncoderLayer:
    """manual_bp's ``TransformerEncoderLayer`` as torch's (batch-first, its own dropout)."""
    from reference.checks_transformer import _torch_activation_arg  # imports this module

    return nn.TransformerEncoderLayer(
        layer.d_model, layer.nhead, dim_feedforward=layer.dim_feedforward,
        dropout=layer.dropout, activation=_torch_activation_arg(layer.activation),
        layer_norm_eps=layer.layer_norm_eps, batch_first=True, norm_first=layer.norm_first,
        bias=layer.has_bias,
    )  # fmt: skip


def _transformer_module(layer: Layer) -> nn.Module | None:
    """The Transformer stacks, whose state-dict keys are already torch's: an encoder layer
    as ``nn.TransformerEncoderLayer``, an encoder as ``nn.TransformerEncoder`` (its final
    norm as ``nn.LayerNorm``); None for any other layer."""
    from manual_bp.layers.transformer import TransformerEncoderLayer
    from manual_bp.layers.transformer_stacks import TransformerEncoder

    if isinstance(layer, TransformerEncoderLayer):
        return _encoder_layer_module(layer)
    if isinstance(layer, TransformerEncoder):
        norm = layer.norm_layer
        if norm is not None:
            norm = nn.LayerNorm(tuple(norm.normalized_shape), eps=norm.eps, bias=norm.has_bias)
        return nn.TransformerEncoder(
            _encoder_layer_module(layer.layers[0]), layer.num_layers, norm,
            enable_nested_tensor=False,
        )  # fmt: skip
    return None


def _module_from_layer(layer: Layer, index: int) -> nn.Module:
    transformer = _transformer_module(layer)
    if transformer is not None:
        return transformer
    if isinstance(layer, ActivationLayer):
        config = layer.activation.get_config()
        name = config.pop("name")
        for cls, (manual_name, _) in _ACTIVATIONS.items():
            if manual_name == name:
                if name == "leaky-relu":
                    return cls(negative_slope=config["alpha"])
                if name in ("softmax", "log-softmax"):
                    return cls(dim=config["dim"])
                return cls(**config)
        raise ValueError(f"layer {index} ({layer!r}): activation {name!r} has no torch module")
    config = layer.get_config()
    config.pop("name")
    for key in ("weight_init", "bias_init", "implementation"):
        config.pop(key, None)
    if isinstance(layer, ResidualLayer):
        return Residual(*(_module_from_layer(c, i) for i, c in enumerate(layer.layers)))
    if layer.name in _SEQUENCE_MODULES:
        kwargs = {k: v for k, v in config.items() if k in _RNN_OPTIONS}
        return _SEQUENCE_MODULES[layer.name](**kwargs)
    if layer.name == "multihead_attention":
        allowed = set(inspect.signature(nn.MultiheadAttention.__init__).parameters)
        kwargs = {k: v for k, v in config.items() if k in allowed}
        return SelfAttention(**kwargs, causal=bool(config.get("causal", False)))
    if layer.name == "reshape":
        return Reshape(*layer.shape)
    if layer.name == "flatten":
        return nn.Flatten(layer.start_dim, layer.end_dim)
    if layer.name == "unflatten":
        return nn.Unflatten(layer.dim, tuple(layer.unflattened_size))
    if layer.name == "global-avgpool2d":
        return nn.AdaptiveAvgPool2d(1)
    if layer.name == "identity-layer":
        return nn.Identity()
    torch_name = {v: k for k, v in _LAYERS.items()}.get(layer.name)
    if torch_name is None:
        raise ValueError(
            f"layer {index} ({layer!r}) has no torch counterpart in nn; supported: "
            f"{', '.join(sorted(set(_LAYERS.values()) & set(LAYERS.names())))} and activations"
        )
    if torch_name == "LayerNorm":
        config["normalized_shape"] = tuple(config["normalized_shape"])
    return getattr(nn, torch_name)(**config)


def to_torch(model: Sequential) -> nn.Sequential:
    """An ``nn.Sequential`` (float64) equal to ``model``: modules, parameters, buffers, mode.

    Residual blocks become :class:`Residual` (``x + f(x)``), reshapes :class:`Reshape`, the
    global average pool ``nn.AdaptiveAvgPool2d(1)``, sequence layers the stand-ins above,
    the Transformer encoder layer and stack ``nn.TransformerEncoderLayer``/``Encoder``
    (batch-first). Every state-dict entry must load (``strict``).
    """
    modules = nn.Sequential(
        OrderedDict(
            (name, _module_from_layer(layer, i))
            for i, (name, layer) in enumerate(model.named_children())
        )
    )
    modules = modules.to(torch.float64 if model.dtype == np.float64 else torch.float32)
    state = {name: torch.from_numpy(np.array(array)) for name, array in model.state_dict().items()}
    modules.load_state_dict(state, strict=True)
    modules.train(model.training)
    return modules
