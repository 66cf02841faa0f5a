"""The oracle of :class:`manual_bp.models.gpt.GPT`: nanoGPT's ``GPT`` in torch, and converters.

:class:`TorchGPT` is nanoGPT's model (Karpathy, ``model.py``) of the same architecture —
pre-norm blocks, one fused ``c_attn``, causal softmax attention, tanh-GELU (GPT-2's
``gelu_new``), tied ``lm_head`` — written with explicit tensors so float64 runs exactly the
textbook computation. :func:`from_torch_state_dict` converts a nanoGPT or Hugging Face GPT-2
state dict to the library's names (HF's ``Conv1D`` stores ``(in, out)``: its ``c_attn``,
``c_proj`` and ``c_fc`` weights are transposed; its ``attn.bias``/``masked_bias`` buffers
are the causal mask, dropped). No download: the caller brings the state dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from manual_bp.models.gpt import GPT, GPTConfig

__all__ = [
    "TorchGPT",
    "from_torch_state_dict",
    "gpt_comparisons",
    "randomised",
    "torch_gpt_like",
]

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


class _Attention(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.n_head = c.n_head
        self.shift = 0  # a deliberate break moves the causal mask's diagonal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, E = x.shape
        q, k, v = self.c_attn(x).split(E, dim=2)
        q, k, v = (a.view(B, T, self.n_head, E // self.n_head).transpose(1, 2) for a in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
        mask = torch.ones(T, T, dtype=torch.bool).tril(self.shift)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).contiguous().view(B, T, E))


class _MLP(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class _Block(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.attn = _Attention(c)
        self.ln_2 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.mlp = _MLP(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    """nanoGPT's ``GPT`` (dropout left out: the oracle runs the evaluation map)."""

    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.config = c
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(c.vocab_size, c.n_embd),
                wpe=nn.Embedding(c.block_size, c.n_embd),
                h=nn.ModuleList([_Block(c) for _ in range(c.n_layer)]),
                ln_f=nn.LayerNorm(c.n_embd, bias=c.bias),
            )
        )
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_weights:
            self.transformer.wte.weight = self.lm_head.weight  # nanoGPT's tying

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple:
        t = self.transformer
        pos = torch.arange(idx.size(1))
        x = t.wte(idx) + t.wpe(pos)
        for block in t.h:
            x = block(x)
        logits = self.lm_head(t.ln_f(x))
        if targets is None:
            return logits, None
        flat = logits.view(-1, logits.size(-1))
        return logits, F.cross_entropy(flat, targets.view(-1), ignore_index=-1)


def randomised(model: GPT, rng: np.random.Generator, scale: float = 0.3) -> GPT:
    """``model`` (in evaluation mode) with every parameter drawn ``N(0, scale²)``, LayerNorm
    gains ``1 + N(0, scale²)``: larger than GPT-2's 0.02 so that every path carries weight."""
    for name, array in model.named_parameters():
        gain = (".ln_" in name or "ln_f" in name) and name.endswith("weight")
        array[...] = float(gain) + rng.normal(0.0, scale, array.shape)
    return model.eval()


def torch_gpt_like(model: GPT, dtype: torch.dtype = torch.float64) -> TorchGPT:
    """A :class:`TorchGPT` holding ``model``'s parameters (the same names)."""
    twin = TorchGPT(model.config).to(dtype)
    state = {k: torch.tensor(v, dtype=dtype) for k, v in model.state_dict().items()}
    twin.load_state_dict(state, strict=True)
    return twin


def from_torch_state_dict(state: Mapping[str, Any], hf: bool = False) -> dict[str, np.ndarray]:
    """A nanoGPT (``hf=False``) or Hugging Face GPT-2 (``hf=True``: keys ``h.0…`` or
    ``transformer.h.0…``, ``Conv1D`` weights ``(in, out)``) state dict under the library's
    names, as NumPy arrays; ``_orig_mod.`` prefixes (``torch.compile``) are stripped."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        key = key.removeprefix("_orig_mod.")
        if key.endswith((".attn.bias", ".attn.masked_bias")) and np.ndim(value) != 1:
            continue  # the causal mask kept as a buffer (HF, old nanoGPT)
        if hf and not key.startswith(("transformer.", "lm_head.")):
            key = f"transformer.{key}"
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        array = np.asarray(array)
        if hf and key.endswith(CONV1D):
            array = array.T
        out[key] = np.ascontiguousarray(array)
    if "lm_head.weight" not in out and "transformer.wte.weight" in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]  # HF omits the tied copy
    return out


def equation_of(name: str, tied: bool) -> str:
    """The ``GPT.*`` ID a parameter's gradient verifies (``docs/gpt.md``)."""
    if name == "transformer.wte.weight" and tied:
        return "GPT.tied"
    if ".attn.c_attn." in name:
        return "GPT.qkv"
    if ".attn.c_proj." in name:
        return "GPT.causal"
    if name.startswith("transformer.h."):
        return "GPT.block"
    return "GPT.lm-ce"


def gradient_sensitivity(model: GPT, idx: np.ndarray, targets: np.ndarray,
                         delta: float = 2.0**-26) -> dict[str, np.ndarray]:  # fmt: skip
    """Per entry of the logits (``"logits"``) and of every gradient, 4 × the largest
    ``|q(θ(1 ± δ)) − q(θ)| / δ`` over two pairs of sign patterns
    (:func:`reference.stack.paired_shakes`; docs/conventions.md's measured condition number
    and its factor 4, here of one forward and backward pass): rounding the parameters and
    every intermediate by ε moves a quantity by about ε times this. The logits need it too:
    a layer norm over two features cancels (measured: logits 40× over a bound without it,
    n_embd = 2, verify case 289)."""
    from reference.stack import paired_shakes

    first = model.backprop(idx, targets, keep_logits=True)
    base = {"logits": first.logits, **first.params}
    kappa = {name: np.zeros_like(g) for name, g in base.items()}
    for shake in paired_shakes(0, delta) + paired_shakes(1, delta):
        shaken = model.copy()
        for _, array in shaken.named_parameters():
            array[...] = shake(array)
        result = shaken.backprop(idx, targets, keep_logits=True)
        for name, g in {"logits": result.logits, **result.params}.items():
            kappa[name] = np.maximum(kappa[name], 4.0 * np.abs(g - base[name]) / delta)
    return kappa


def gradient_scales(model: GPT, idx: np.ndarray, targets: np.ndarray, twin: TorchGPT,
                    logits: torch.Tensor) -> dict[str, np.ndarray]:  # fmt: skip
    """The magnitude scale of the logits (``"logits"``: ``|logits|`` or the measured
    condition number) and of every gradient (after torch's backward on ``twin``): the
    largest of (1) the largest gradient of the step (the Transformer family's floor), (2)
    ``(2·n_layer + 1)·Σ_rows max_v |∂C/∂logits|``, the size of the terms entering every
    gradient sum — one per row for each path of the residual stream (two a block, and the
    skip) — which matters when all cancel (``n_embd = 1``: a layer norm over one entry is
    constant; measured 1.1× over the one-path floor, verify case 453) and (3) per entry the
    measured condition number :func:`gradient_sensitivity`."""
    grads = {name: p.grad.numpy() for name, p in twin.named_parameters()}
    paths = 2 * model.config.n_layer + 1
    floor = max(paths * float(logits.grad.abs().amax(dim=-1).sum()),
                *(float(np.abs(g).max()) for g in grads.values()))  # fmt: skip
    kappa = gradient_sensitivity(model, idx, targets)
    scales = {name: np.maximum(floor, kappa[name]) for name in grads}
    scales["logits"] = np.maximum(np.abs(logits.detach().numpy()), kappa["logits"])
    return scales


def gpt_comparisons(model: GPT, idx: np.ndarray, targets: np.ndarray) -> list[Any]:
    """Loss, logits and every parameter gradient of ``model`` against :class:`TorchGPT`
    (float64, the same parameters), each under its ``GPT.*`` ID, scaled by
    :func:`gradient_scales`."""
    from reference.compare import Comparison

    model.eval()
    twin = torch_gpt_like(model)
    result = model.backprop(idx, targets, keep_logits=True)
    logits, loss = twin(torch.as_tensor(idx), torch.as_tensor(targets))
    logits.retain_grad()
    loss.backward()
    scales = gradient_scales(model, idx, targets, twin, logits)
    comparisons = [
        Comparison("GPT.lm-ce", "loss", np.array(result.loss), np.array(loss.item())),
        Comparison(
            "GPT.causal", "logits", result.logits, logits.detach().numpy(), scales["logits"]
        ),
    ]
    for name, tensor in twin.named_parameters():
        comparisons.append(
            Comparison(
                equation_of(name, model.tied),
                f"∂C/∂{name}",
                result.params[name],
                tensor.grad.numpy(),
                scales[name],
            )
        )
    return comparisons
