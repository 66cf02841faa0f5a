"""Verification of the Transformer family (``TF.*``, ``PROD.transformer.*``) against torch.

The oracle is torch's own module (``nn.TransformerEncoderLayer``, …, float64) of the same
configuration, called through ``torch.func.functional_call`` with the library's parameters
(their names are torch's), in float64, with a random upstream gradient. torch's module is
always run in training mode: with dropout 0 that is the evaluation map too, and it keeps
torch off its fused inference kernel (which has no forward mode). Dropout in training is
checked by central finite differences with the layer's own masks (a deep copy per
evaluation replays the generators). Scales: every gradient's tolerance is relative to the
largest gradient of its step (a gradient through a layer norm cancels to near zero while its
terms are of that size: ``reference/stack.py``'s floor).
"""

from __future__ import annotations

import functools
import json
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import reference.checks_attention as attention_checks  # attributes read at call time: the

# each other through reference.checks
from manual_bp.gradcheck.compare import DEFAULT_C
from manual_bp.layers import (
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from reference import checks_attention, checks_layers  # read at call time: they import
from reference.checks import register_check

# checks modules import each other through reference.checks
from reference.compare import Comparison
from reference.components import torch_activation
from reference.products import product_comparisons, register_plain_twin
from reference.stack import (
    paired_shakes,
    random_stack,
    register_block,
    register_torch,
    stack_comparisons,
)

__all__ = [
    "draw_layer",
    "plain_layer_norm",
    "torch_module",
    "torch_transformer_call",
    "transformer_case",
]

ENCODERS = (TransformerEncoderLayer, TransformerEncoder)


def _torch_activation_arg(config: Any) -> Any:
    if isinstance(config, str):
        return config
    if config.get("name") == "gelu":
        return torch.nn.GELU(approximate=config.get("approximate", "none"))
    return config["name"]


def _layer_kwargs(layer: Any) -> dict[str, Any]:
    return dict(
        dim_feedforward=layer.dim_feedforward, dropout=0.0,
        activation=_torch_activation_arg(layer.activation), layer_norm_eps=layer.layer_norm_eps,
        batch_first=layer.batch_first, norm_first=layer.norm_first, bias=layer.has_bias,
        dtype=torch.float64,
    )  # fmt: skip


def _restore_activations(module: torch.nn.Module, activation: Any) -> torch.nn.Module:
    """torch's deep copies of a ``TransformerDecoderLayer`` whose activation is a module
    come back with ``F.relu`` (its ``__setstate__`` fills a missing ``activation`` with relu,
    and a module activation lives in ``_modules``): the stacks' and ``nn.Transformer``'s
    copies silently change activation. The oracle sets it back; the library keeps it."""
    if isinstance(activation, str):
        return module
    for sub in module.modules():
        if isinstance(sub, torch.nn.TransformerDecoderLayer):
            sub.activation = _torch_activation_arg(activation)
    return module


@functools.cache
def _module(kind: str, key: str) -> torch.nn.Module:
    with torch._C._DisableFuncTorch():  # torch's random init must not run under torch.func
        built = _build_module(kind, key)
    config = json.loads(key)
    activation = config.get("activation", config.get("layer", {}).get("activation"))
    return _restore_activations(built, activation)


def _build_module(kind: str, key: str) -> torch.nn.Module:
    config = json.loads(key)
    if kind == "layer":
        cls = getattr(torch.nn, config.pop("cls"))
        return cls(config.pop("d_model"), config.pop("nhead"), **_layer_kwargs_json(config))
    if kind == "Transformer":
        return torch.nn.Transformer(**_layer_kwargs_json(config))
    cls = getattr(torch.nn, kind)
    inner = _build_module("layer", json.dumps(config["layer"]))
    norm = config["norm"]
    norm_module = None
    if norm is not None:
        norm_module = torch.nn.LayerNorm(norm["normalized_shape"], eps=norm["eps"],
                                         bias=norm["bias"], dtype=torch.float64)  # fmt: skip
    extra = {"enable_nested_tensor": False} if kind == "TransformerEncoder" else {}
    return cls(inner, config["num_layers"], norm_module, **extra)


def _layer_kwargs_json(config: dict) -> dict:
    config = dict(config)
    config["activation"] = _torch_activation_arg(config["activation"])
    config["dtype"] = torch.float64
    config["dropout"] = 0.0
    return config


def _layer_key(layer: Any) -> dict:
    return dict(
        cls=type(layer).__name__, d_model=layer.d_model, nhead=layer.nhead,
        dim_feedforward=layer.dim_feedforward, activation=layer.activation,
        layer_norm_eps=layer.layer_norm_eps, batch_first=layer.batch_first,
        norm_first=layer.norm_first, bias=layer.has_bias,
    )  # fmt: skip


def torch_module(layer: Any) -> torch.nn.Module:
    """torch's module of ``layer``'s configuration (dropout 0, training mode), float64."""
    if isinstance(layer, (TransformerEncoderLayer, TransformerDecoderLayer)):
        module = _module("layer", json.dumps(_layer_key(layer)))
    elif isinstance(layer, Transformer):
        key = _layer_key(layer.encoder.layers[0])
        for name in ("cls", "d_model", "nhead"):
            key.pop(name)
        key.update(d_model=layer.d_model, nhead=layer.nhead,
                   num_encoder_layers=layer.num_encoder_layers,
                   num_decoder_layers=layer.num_decoder_layers)  # fmt: skip
        module = _module("Transformer", json.dumps(key))
    else:
        norm = layer.norm_layer
        norm_key = None
        if norm is not None:
            norm_key = dict(normalized_shape=list(norm.normalized_shape), eps=norm.eps,
                            bias=norm.has_bias)  # fmt: skip
        key = dict(layer=_layer_key(layer.layers[0]), num_layers=layer.num_layers, norm=norm_key)
        module = _module(type(layer).__name__, json.dumps(key))
    return module.train()


def torch_transformer_call(layer: Any, params: dict, *inputs: Any, **kwargs: Any) -> torch.Tensor:
    """torch's module of ``layer`` called with ``params`` (tensors under torch's names)."""
    module = torch_module(layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = torch.func.functional_call(module, params, inputs, kwargs)
    return out


def _tensor(a: Any) -> Any:
    return None if a is None else torch.tensor(np.asarray(a))


# ---------------------------------------------------------------------- the stack oracle
@register_torch(TransformerEncoderLayer)
@register_torch(TransformerEncoder)
def _encoder(layer, params, buffers, x, cache):
    padding = _tensor(layer.key_padding_mask)
    return torch_transformer_call(layer, params, x, src_key_padding_mask=padding)


@register_torch(TransformerDecoderLayer)
@register_torch(TransformerDecoder)
@register_torch(Transformer)
def _two_inputs(layer, params, buffers, x, cache):
    second = getattr(layer, "tgt" if isinstance(layer, Transformer) else "memory")
    return torch_transformer_call(layer, params, x, x if second is None else _tensor(second))


def _sub(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def plain_encoder_layer(layer: TransformerEncoderLayer, params: dict, x: torch.Tensor):
    """The encoder layer from plain torch ops (the products' oracle: torch's fused layer norm
    is not trusted under forward-over-reverse, ``reference.products``); dropout is the
    identity (products are taken without dropout)."""
    children = dict(layer.named_children())
    attention = children["self_attn"]

    def sa(h):
        own = _sub(params, "self_attn.")
        if attention.key_padding_mask is not None:
            return attention_checks.torch_mha_module(
                attention, own, h, h, h, None, attention.key_padding_mask
            )
        return checks_attention.torch_mha(attention, own, h, h, h)

    def ln(name, h):
        return checks_layers.plain_layernorm(children[name], _sub(params, f"{name}."), {}, h, None)

    act = torch_activation(children["activation"].activation)

    def ff(h):
        h = act(F.linear(h, params["linear1.weight"], params.get("linear1.bias")))
        return F.linear(h, params["linear2.weight"], params.get("linear2.bias"))

    if layer.norm_first:
        x = x + sa(ln("norm1", x))
        return x + ff(ln("norm2", x))
    x = ln("norm1", x + sa(x))
    return ln("norm2", x + ff(x))


@register_plain_twin(TransformerEncoderLayer)
def _encoder_layer_twin(layer, params, buffers, x, cache):
    return plain_encoder_layer(layer, params, x)


@register_plain_twin(TransformerEncoder)
def _encoder_twin(layer, params, buffers, x, cache):
    for i, inner in enumerate(layer.layers):
        x = plain_encoder_layer(inner, _sub(params, f"layers.{i}."), x)
    if layer.norm_layer is not None:
        x = checks_layers.plain_layernorm(layer.norm_layer, _sub(params, "norm."), {}, x, None)
    return x


# ---------------------------------------------------------------------- random cases
def draw_layer(rng: np.random.Generator, cls: type, d_model: int | None = None, **fixed) -> Any:
    """A ``cls`` with drawn options (heads dividing ``d_model``, relu/gelu/tanh-GELU, pre-
    or post-norm, bias, ``eps``, layout); dropout 0 unless ``fixed`` says otherwise."""
    if d_model is None:
        d_model = int(rng.integers(1, 4)) * int(rng.integers(1, 4))
    heads = [h for h in range(1, d_model + 1) if d_model % h == 0]
    activation = ("relu", "gelu", {"name": "gelu", "approximate": "tanh"})[int(rng.integers(3))]
    options = dict(
        dim_feedforward=int(rng.integers(1, 9)), dropout=0.0, activation=activation,
        layer_norm_eps=float(rng.choice([1e-5, 1e-3])), batch_first=bool(rng.integers(2)),
        norm_first=bool(rng.integers(2)), bias=bool(rng.integers(2)),
    )  # fmt: skip
    options.update(fixed)
    nhead = heads[int(rng.integers(len(heads)))]
    seed = int(rng.integers(2**31))
    if cls in (TransformerEncoderLayer, TransformerDecoderLayer):
        return cls(d_model, nhead, **options, seed=seed)
    if cls is Transformer:
        layers = {"num_encoder_layers": int(rng.integers(1, 3)),
                  "num_decoder_layers": int(rng.integers(1, 3))}  # fmt: skip
        return Transformer(d_model, nhead, **layers, **options, seed=seed)
    inner_cls = TransformerEncoderLayer if cls is TransformerEncoder else TransformerDecoderLayer
    # seeded from the case's generator: the stack deep-copies this layer's parameters
    inner = inner_cls(d_model, nhead, **options, seed=int(rng.integers(2**31)))
    norm = None
    if rng.integers(2):
        from manual_bp.layers import LayerNorm

        norm = LayerNorm(d_model, bias=bool(rng.integers(2)))
        norm.params["weight"][...] = rng.uniform(0.5, 1.5, d_model)
    return cls(inner, int(rng.integers(1, 4)), norm, seed=seed)


def _mask(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray | None:
    """An attention mask (bool True = not allowed; key 0 always allowed) or a float one."""
    if kind == "none":
        return None
    if kind == "float":
        return rng.standard_normal(shape)
    mask = rng.random(shape) < 0.4
    mask[:, 0] = False
    return mask


def _padding(rng: np.random.Generator, n: int, s: int, batched: bool) -> np.ndarray | None:
    if rng.integers(2):
        return None
    mask = rng.random((n, s)) < 0.3
    mask[:, 0] = False  # every query keeps a key
    return mask if batched else mask[0]


def _arrange(x: np.ndarray, layer: Any, batched: bool) -> np.ndarray:
    """A batch-first ``(N, L, E)`` array in ``layer``'s layout."""
    if not batched:
        return x[0]
    return x if layer.batch_first else np.swapaxes(x, 0, 1)


def transformer_case(layer: Any, rng: np.random.Generator) -> dict[str, Any]:
    """Random inputs, masks and keyword arguments of ``layer``'s torch forward (batch-first
    drawn, then arranged in the layer's layout; unbatched at random)."""
    batched = bool(rng.integers(4))
    n = int(rng.integers(1, 4)) if batched else 1
    L, S, E = int(rng.integers(1, 5)), int(rng.integers(1, 5)), layer.d_model
    first = _arrange(rng.standard_normal((n, L, E)), layer, batched)
    second = _arrange(rng.standard_normal((n, S, E)), layer, batched)
    kind = lambda: ("none", "bool", "float")[int(rng.integers(3))]  # noqa: E731
    if isinstance(layer, ENCODERS):
        mask_name = "src_mask" if isinstance(layer, TransformerEncoderLayer) else "mask"
        kwargs = {mask_name: _mask(rng, (L, L), kind()),
                  "src_key_padding_mask": _padding(rng, n, L, batched)}  # fmt: skip
        return {"inputs": (first,), "kwargs": kwargs}
    if isinstance(layer, Transformer):
        kwargs = {"src_mask": _mask(rng, (S, S), kind()), "tgt_mask": _mask(rng, (L, L), kind()),
                  "memory_mask": _mask(rng, (L, S), kind()),
                  "src_key_padding_mask": _padding(rng, n, S, batched),
                  "tgt_key_padding_mask": _padding(rng, n, L, batched),
                  "memory_key_padding_mask": _padding(rng, n, S, batched)}  # fmt: skip
        return {"inputs": (second, first), "kwargs": kwargs}
    kwargs = {"tgt_mask": _mask(rng, (L, L), kind()), "memory_mask": _mask(rng, (L, S), kind()),
              "tgt_key_padding_mask": _padding(rng, n, L, batched),
              "memory_key_padding_mask": _padding(rng, n, S, batched)}  # fmt: skip
    return {"inputs": (first, second), "kwargs": kwargs}


DELTA = 2.0**-26


def plain_layer_norm(norm: torch.nn.LayerNorm):
    """``norm``'s forward in plain torch ops (two-pass variance): the same function as
    ``F.layer_norm``, rounded another way."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(-len(norm.normalized_shape), 0))
        centred = x - x.mean(dims, keepdim=True)
        y = centred * torch.rsqrt((centred**2).mean(dims, keepdim=True) + norm.eps)
        y = y if norm.weight is None else y * norm.weight
        return y if norm.bias is None else y + norm.bias

    return forward


def _torch_gradients(layer, case, d_out, shake=None, plain_norms=False) -> dict:
    """torch's output and gradients; with ``shake``, the inputs, the parameters and the
    output of every submodule (its rounding, which a later layer norm over two features
    can amplify) shaken; with ``plain_norms``, every layer norm in plain ops."""

    def jitter(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a if shake is None else shake(a), requires_grad=True)

    def shake_output(module, args, out):
        first = out[0] if isinstance(out, tuple) else out
        shaken = first * torch.tensor(shake(np.ones(tuple(first.shape))))
        return (shaken, *out[1:]) if isinstance(out, tuple) else shaken

    params = {n: jitter(p) for n, p in layer.named_parameters()}
    inputs = [jitter(a) for a in case["inputs"]]
    kwargs = {k: _tensor(v) for k, v in case["kwargs"].items()}
    module = torch_module(layer)
    hooks = [] if shake is None else [
        sub.register_forward_hook(shake_output) for sub in module.modules() if sub is not module
    ]  # fmt: skip
    norms = [sub for sub in module.modules() if plain_norms and isinstance(sub, torch.nn.LayerNorm)]
    for norm in norms:
        norm.forward = plain_layer_norm(norm)
    try:
        out = torch_transformer_call(layer, params, *inputs, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
        for norm in norms:
            del norm.forward  # the class's own forward again
    (out * torch.tensor(d_out)).sum().backward()
    found = {"output": out.detach().numpy()}
    found.update({f"∂C/∂input{i}": t.grad.numpy() for i, t in enumerate(inputs)})
    found.update({f"∂C/∂{n}": t.grad.numpy() for n, t in params.items()})
    return found


def torch_comparisons(layer: Any, case: dict, rng: np.random.Generator, equation: str):
    """Output, every input gradient and every parameter gradient against torch's module.

    Bound of each quantity: the largest of its own magnitude, the largest gradient of the
    step (a gradient through a layer norm is a difference of terms of that size), its
    rounding sensitivity — how far it moves when every input and parameter is perturbed by
    a relative ``δ = 2⁻²⁶``, per unit ``δ``, the larger of two draws times 4
    (``reference/stack.py``'s model: with
    ``d_model = 1`` every layer-norm gradient is 0 exactly and torch's is rounding noise) —
    and the oracle's own rounding: twice how far torch's result moves when its fused
    ``F.layer_norm`` is replaced by the same function in plain ops. Over two features with
    a mean far from zero, the fused kernel's error is not a rounding of the inputs, so the
    perturbations do not show it (measured: transformer-stacks seed 1 case 583, torch off an
    80-bit evaluation by 2.3e-14 against a 6e-15 bound, its plain-op twin by 7e-16 and
    manual_bp by 8.5e-15)."""
    out, cache = layer.forward(*case["inputs"], **case["kwargs"])
    d_out = rng.standard_normal(out.shape)
    d_inputs, grads = layer.backward(d_out, cache)
    d_inputs = d_inputs if isinstance(d_inputs, tuple) else (d_inputs,)
    actual = {"output": out}
    actual.update({f"∂C/∂input{i}": d for i, d in enumerate(d_inputs)})
    actual.update({f"∂C/∂{n}": grads[n] for n, _ in layer.named_parameters()})
    expected = _torch_gradients(layer, case, d_out)
    # the larger of a paired ±δ draw, times 4: reference/stack.py's model (one draw can
    # align better than the actual rounding; measured up to 4.8× one draw in deep chains;
    # the pair gives neighbours both equal and opposite signs)
    moved = [_torch_gradients(layer, case, d_out, shake) for shake in paired_shakes(0, DELTA)]
    plain = _torch_gradients(layer, case, d_out, plain_norms=True)
    floor = max(float(np.abs(v).max(initial=0.0)) for k, v in expected.items() if k != "output")
    unit = DEFAULT_C * np.finfo(np.float64).eps  # the bound is c·ε·scale
    comparisons = []
    for name, want in expected.items():
        sensitivity = 4.0 * np.maximum(*(np.abs(m[name] - want) for m in moved)) / DELTA
        oracle_noise = 2.0 * np.abs(plain[name] - want) / unit
        base = np.maximum(np.abs(want), 1.0 if name == "output" else floor)
        scale = np.maximum(np.maximum(base, sensitivity), oracle_noise)
        comparisons.append(Comparison(equation, name, actual[name], want, scale=scale))
    return comparisons


@register_check("transformer-layers")
def transformer_layers_check(rng: np.random.Generator) -> list[Comparison]:
    """TF.encoder-layer and TF.decoder-layer against torch's modules: every option, masks
    (bool, float, key padding), both layouts and unbatched inputs."""
    cls = (TransformerEncoderLayer, TransformerDecoderLayer)[int(rng.integers(2))]
    layer = draw_layer(rng, cls)
    return torch_comparisons(layer, transformer_case(layer, rng), rng, layer.equation)


@register_check("transformer-stacks")
def transformer_stacks_check(rng: np.random.Generator) -> list[Comparison]:
    """TF.encoder, TF.decoder and TF.transformer against torch's modules."""
    cls = (TransformerEncoder, TransformerDecoder, Transformer)[int(rng.integers(3))]
    # d_model ≥ 2: with one feature a layer norm's output is its bias and every gradient
    # below a second norm is 0 exactly, torch's rounding noise (no magnitude to scale by)
    layer = draw_layer(rng, cls, d_model=2 * int(rng.integers(1, 4)) + int(rng.integers(2)))
    return torch_comparisons(layer, transformer_case(layer, rng), rng, layer.equation)


@register_check("transformer-products")
def transformer_products_check(rng: np.random.Generator) -> list[Comparison]:
    """PROD.transformer.*: every V-axis product of an encoder layer or stack against
    torch.func (plain-op twin), plus the adjoint and symmetry identities."""
    cls = ENCODERS[int(rng.integers(2))]
    layer = draw_layer(rng, cls, batch_first=True)
    x = rng.standard_normal((int(rng.integers(1, 4)), int(rng.integers(1, 5)), layer.d_model))
    return product_comparisons(layer, x, rng)


@register_check("transformer-chain")
def transformer_chain_check(rng: np.random.Generator) -> list[Comparison]:
    """TF.layer-chain: a two-layer encoder trained through its fast form (the blocks' own
    steps) gives torch's gradients; in the middle of a random sequence stack."""
    from manual_bp.layers.steps import GenericStep
    from manual_bp.training.fused import FusedTrainer

    model, x, y = random_stack(rng, "sequences", blocks=("transformer-encoder",))
    fast = FusedTrainer(model).gradients(x, y)
    generic = FusedTrainer(model)
    generic.steps = [GenericStep(layer) for layer in model.layers]
    generic._forwards = [step.forward for step in generic.steps]
    generic._backwards = [step.backward for step in generic.steps]
    readable = generic.gradients(x, y)
    floor = max(float(np.abs(g).max(initial=0.0)) for g in readable)
    against_torch = stack_comparisons(model, x, y, equation="TF.layer-chain")
    # the rounding sensitivity measured for torch's comparison of the same gradient bounds
    # two float64 forms of it too: transformer-chain case 219 (seed 0), a layer norm over
    # three features, moved the fast and readable forms 2.2e-14 apart where the floor
    # allowed 5.6e-15 and the measured sensitivity 1.2e-12 (both within it of torch)
    sensitivity = {c.name: c.scale for c in against_torch if c.scale is not None}
    names = [name for name, _ in model.named_parameters()]
    comparisons = [
        Comparison(
            "TF.layer-chain",
            f"fast ∂C/∂{name}",
            got,
            want,
            scale=np.maximum(np.maximum(np.abs(want), floor), sensitivity.get(f"∂C/∂{name}", 0.0)),
        )
        for name, got, want in zip(names, fast, readable, strict=True)
    ]
    return comparisons + against_torch


# ---------------------------------------------------------------------- stack blocks
def _block(cls: type):
    def block(rng: np.random.Generator, shape: tuple[int, ...]):
        from manual_bp.layers import Dense

        widen = []
        if shape[-1] < 2:  # a layer norm of one feature is exactly 0 (torch's: rounding
            widen = [Dense(shape[-1], 2, seed=int(rng.integers(2**31)))]  # noise): widen
            shape = (*shape[:-1], 2)
        layer = draw_layer(rng, cls, d_model=shape[-1], batch_first=True)
        return [*widen, layer], shape

    return block


for _name, _cls in (("transformer-encoder-layer", TransformerEncoderLayer),
                    ("transformer-decoder-layer", TransformerDecoderLayer),
                    ("transformer-encoder", TransformerEncoder),
                    ("transformer-decoder", TransformerDecoder),
                    ("transformer", Transformer)):  # fmt: skip
    register_block("sequences", _name)(_block(_cls))
