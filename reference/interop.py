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

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from manual_bp.layers import LAYERS, ActivationLayer, Layer
from manual_bp.models.sequential import Sequential

__all__ = [
    "SUPPORTED",
    "GRUSequence",
    "LSTMSequence",
    "RNNSequence",
    "SelfAttention",
    "from_torch",
    "to_torch",
]


class LSTMSequence(nn.LSTM):
    """``nn.LSTM(batch_first=True)`` whose forward returns the output sequence only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, batch_first=True, **kwargs)

    def forward(self, x: torch.Tensor, hx: Any = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, hx)[0]


class GRUSequence(nn.GRU):
    """``nn.GRU(batch_first=True)`` whose forward returns the output sequence only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, batch_first=True, **kwargs)

    def forward(self, x: torch.Tensor, hx: Any = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, hx)[0]


class RNNSequence(nn.RNN):
    """``nn.RNN(batch_first=True)`` whose forward returns the output sequence only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, batch_first=True, **kwargs)

    def forward(self, x: torch.Tensor, hx: Any = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, hx)[0]


class SelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention(batch_first=True)`` as a one-input layer: ``attn(x, x, x)``.

    ``causal=True`` adds the float causal mask (−inf above the diagonal), manual_bp's
    ``MultiheadAttention(causal=True)``.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, causal: bool = False, **kwargs: Any):
        super().__init__(embed_dim, num_heads, batch_first=True, **kwargs)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        mask = None
        if self.causal:
            n = x.shape[1]
            mask = torch.full((n, n), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        return super().forward(x, x, x, attn_mask=mask, need_weights=False)[0]


#: manual_bp sequence layer name -> the torch stand-in that to_torch builds
_SEQUENCE_MODULES = {"lstm": LSTMSequence, "gru": GRUSequence, "rnn": RNNSequence}

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
    nn.Softmax: ("softmax", lambda m: {}),
    nn.LogSoftmax: ("log-softmax", lambda m: {}),
}

#: torch module class name -> manual_bp layer name (hyper-parameters share torch's names)
_LAYERS = {
    "Linear": "dense",
    "Conv1d": "conv1d",
    "Conv2d": "conv2d",
    "ConvTranspose2d": "conv-transpose2d",
    "MaxPool2d": "maxpool2d",
    "AvgPool2d": "avgpool2d",
    "BatchNorm1d": "batchnorm1d",
    "BatchNorm2d": "batchnorm2d",
    "LayerNorm": "layernorm",
    "Dropout": "dropout",
    "Dropout2d": "dropout2d",
    "Flatten": "flatten",
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
)


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _layer_from_module(module: nn.Module, index: int) -> Layer:
    activation = _ACTIVATIONS.get(type(module))
    if activation is not None:
        name, options = activation
        if name in ("softmax", "log-softmax") and module.dim not in (-1, None, 1):
            raise ValueError(f"module {index} ({module}): only dim=-1 (the last axis) is supported")
        return ActivationLayer({"name": name, **options(module)})
    name = _LAYERS.get(type(module).__name__)
    if name is None or name not in LAYERS:
        raise ValueError(
            f"module {index} ({type(module).__name__}) has no manual_bp counterpart; "
            f"supported: {', '.join(SUPPORTED)}"
        )
    _check_sequence_module(module, index)
    cls = LAYERS.lookup(name)
    kwargs: dict[str, Any] = {}
    for key in cls.hyperparameters:
        if key == "bias" and isinstance(getattr(module, "bias", None), bool):
            kwargs[key] = module.bias  # nn.RNN/LSTM/GRU keep a flag, not a tensor
        elif key == "bias" and isinstance(module, nn.MultiheadAttention):
            kwargs[key] = module.in_proj_bias is not None
        elif key == "causal":
            kwargs[key] = bool(getattr(module, "causal", False))
        elif key == "bias":
            kwargs[key] = getattr(module, "bias", None) is not None
        elif key in ("weight_init", "bias_init", "implementation"):
            continue
        elif hasattr(module, key):
            kwargs[key] = _plain(getattr(module, key))
    if name == "flatten" and (module.start_dim, module.end_dim) != (1, -1):
        raise ValueError(f"module {index} (Flatten): only start_dim=1, end_dim=-1 is supported")
    return cls(**kwargs)


def _check_sequence_module(module: nn.Module, index: int) -> None:
    """Refuse the options of torch's sequence modules that manual_bp does not model."""
    label = f"module {index} ({type(module).__name__})"
    if isinstance(module, nn.RNNBase):
        if not module.batch_first:
            raise ValueError(f"{label}: only batch_first=True (batch-major sequences) is supported")
        if module.dropout:
            raise ValueError(
                f"{label}: dropout between layers is not supported (got {module.dropout})"
            )
        if getattr(module, "proj_size", 0):
            raise ValueError(f"{label}: proj_size is not supported")
    if isinstance(module, nn.MultiheadAttention):
        if not module.batch_first:
            raise ValueError(f"{label}: only batch_first=True is supported")
        if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
            raise ValueError(f"{label}: kdim/vdim, add_bias_kv and add_zero_attn are not supported")
        if module.dropout:
            raise ValueError(f"{label}: attention dropout is not supported (got {module.dropout})")


def from_torch(
    module: nn.Sequential | Sequence[nn.Module],
    *,
    cost: Any = "quadratic",
    input_shape: Sequence[int] | None = None,
    dtype: str = "float64",
) -> Sequential:
    """A :class:`Sequential` with the architecture, parameters, buffers and mode of ``module``."""
    modules = list(module)
    layers = [_layer_from_module(m, i) for i, m in enumerate(modules)]
    model = Sequential(layers, cost, input_shape=input_shape, dtype=dtype)
    state = {k: v.detach().cpu().numpy() for k, v in nn.Sequential(*modules).state_dict().items()}
    model.load_state_dict(state)
    training = module.training if isinstance(module, nn.Module) else modules[0].training
    model.train(training)
    return model


def _module_from_layer(layer: Layer, index: int) -> nn.Module:
    if isinstance(layer, ActivationLayer):
        config = layer.activation.get_config()
        name = config.pop("name")
        for cls, (manual_name, _) in _ACTIVATIONS.items():
            if manual_name == name:
                if name == "leaky-relu":
                    return cls(negative_slope=config["alpha"])
                if name in ("softmax", "log-softmax"):
                    return cls(dim=-1)
                return cls(**config)
    if layer.name in _SEQUENCE_MODULES:
        options = {"nonlinearity": layer.nonlinearity} if layer.name == "rnn" else {}
        return _SEQUENCE_MODULES[layer.name](
            layer.input_size, layer.hidden_size, layer.num_layers, bias=layer.bias,
            bidirectional=layer.bidirectional, **options,
        )  # fmt: skip
    if layer.name == "multihead_attention":
        return SelfAttention(layer.embed_dim, layer.num_heads, bias=layer.bias, causal=layer.causal)
    torch_name = {v: k for k, v in _LAYERS.items()}.get(layer.name)
    if torch_name is None:
        raise ValueError(
            f"layer {index} ({layer!r}) has no torch counterpart in nn; supported: "
            f"{', '.join(sorted(set(_LAYERS.values()) & set(LAYERS.names())))} and activations"
        )
    config = layer.get_config()
    config.pop("name")
    for key in ("weight_init", "bias_init", "implementation"):
        config.pop(key, None)
    if torch_name == "LayerNorm":
        config["normalized_shape"] = tuple(config["normalized_shape"])
    return getattr(nn, torch_name)(**config)


def to_torch(model: Sequential) -> nn.Sequential:
    """An ``nn.Sequential`` (float64) equal to ``model``: modules, parameters, buffers, mode."""
    modules = nn.Sequential(*(_module_from_layer(l, i) for i, l in enumerate(model.layers)))
    modules = modules.to(torch.float64 if model.dtype == np.float64 else torch.float32)
    state = {name: torch.from_numpy(np.array(array)) for name, array in model.state_dict().items()}
    modules.load_state_dict(state)
    modules.train(model.training)
    return modules
