"""Verification of GPT-2 (``GPT.*``, ``docs/gpt.md``) against nanoGPT's model in torch.

``gpt``: a random configuration (layers 1–3, heads 1–4, widths, context, vocabulary, tied
or not, bias or not), random parameters and targets with ``ignore_index`` positions: loss,
logits and every parameter gradient in float64 (:func:`reference.gpt.gpt_comparisons`;
scales there). ``gpt-training``: the gradients clipped by :func:`clip_grad_norm_` against
torch's (``GPT.clip``) and the warm-up + cosine rates against torch's ``LambdaLR`` driven
by nanoGPT's ``get_lr`` (``GPT.warmup-cosine``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from manual_bp.models.gpt import GPT, GPTConfig
from manual_bp.optimizers import SGD
from manual_bp.schedules_warmup import WarmupCosineLR
from manual_bp.training.clip import clip_grad_norm_, grad_norm
from reference.checks import register_check
from reference.compare import Comparison
from reference.gpt import gpt_comparisons, gradient_scales, randomised, torch_gpt_like

__all__ = ["draw_gpt"]


def draw_gpt(rng: np.random.Generator) -> tuple[GPT, np.ndarray, np.ndarray]:
    """A random model and batch (targets: a quarter ``-1``, the first position counted)."""
    heads = int(rng.integers(1, 5))
    config = GPTConfig(
        vocab_size=int(rng.integers(2, 20)),
        block_size=int(rng.integers(1, 9)),
        n_layer=int(rng.integers(1, 4)),
        n_head=heads,
        n_embd=heads * int(rng.integers(1, 5)),
        dropout=float(rng.choice([0.0, 0.1])),
        bias=bool(rng.integers(2)),
        tie_weights=bool(rng.random() < 0.75),
    )
    model = randomised(GPT(config, seed=int(rng.integers(2**31))), rng)
    B, T = int(rng.integers(1, 4)), int(rng.integers(1, config.block_size + 1))
    idx = rng.integers(0, config.vocab_size, (B, T))
    targets = rng.integers(0, config.vocab_size, (B, T))
    targets[rng.random((B, T)) < 0.25] = -1
    targets[0, 0] = rng.integers(0, config.vocab_size)
    return model, idx, targets


@register_check("gpt")
def gpt_check(rng: np.random.Generator) -> list[Comparison]:
    """GPT.block, GPT.qkv, GPT.causal, GPT.tied, GPT.lm-ce: the whole model vs torch."""
    return gpt_comparisons(*draw_gpt(rng))


@register_check("gpt-training")
def gpt_training_check(rng: np.random.Generator) -> list[Comparison]:
    """GPT.clip on the model's gradients, GPT.warmup-cosine over a run of iterations."""
    model, idx, targets = draw_gpt(rng)
    twin = torch_gpt_like(model)
    logits, loss = twin(torch.as_tensor(idx), torch.as_tensor(targets))
    logits.retain_grad()
    loss.backward()
    scales = gradient_scales(model, idx, targets, twin, logits)
    scales.pop("logits")  # the gradients' scales only
    _, grads = model.loss_and_gradients(idx, targets)
    ours = dict(zip(model._parameter_names, grads, strict=True))
    floor = max(float(s.max()) for s in scales.values())
    p = float(rng.choice([2.0, 1.0, math.inf]))
    max_norm = float(rng.uniform(0.05, 2.0)) * floor * len(grads)
    total = clip_grad_norm_(grads, max_norm, p)
    expected = torch.nn.utils.clip_grad_norm_(twin.parameters(), max_norm, p).item()
    comparisons = [Comparison("GPT.clip", "total norm", np.array(total), np.array(expected),
                              scale=np.array(grad_norm(list(scales.values()), p)))]  # fmt: skip
    shrink = min(1.0, max_norm / (total + 1e-6))  # the clipped arrays' scales shrink too
    for name, tensor in twin.named_parameters():
        clipped = tensor.grad.numpy()
        comparisons.append(Comparison("GPT.clip", f"clipped ∂C/∂{name}", ours[name], clipped,
                                      shrink * scales[name]))  # fmt: skip
    warmup = int(rng.integers(0, 5))
    decay = warmup + int(rng.integers(1, 10))
    base, low = float(rng.uniform(1e-4, 1e-2)), float(rng.uniform(0.0, 1e-4))
    optimizer = SGD(lr=base)
    schedule = WarmupCosineLR(optimizer, warmup, decay, low)
    holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)

    def get_lr(t: int) -> float:  # nanoGPT's train.py, as written there
        if t < warmup:
            return base * (t + 1) / (warmup + 1)
        if t > decay:
            return low
        ratio = (t - warmup) / (decay - warmup)
        return low + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (base - low)

    torch_schedule = torch.optim.lr_scheduler.LambdaLR(holder, lambda t: get_lr(t) / base)
    rates, torch_rates = [optimizer.lr], [holder.param_groups[0]["lr"]]
    for _ in range(decay + 3):
        schedule.step()
        holder.step()
        torch_schedule.step()
        rates.append(optimizer.lr)
        torch_rates.append(holder.param_groups[0]["lr"])
    comparisons.append(Comparison("GPT.warmup-cosine", "rates", np.array(rates),
                                  np.array(torch_rates)))  # fmt: skip
    return comparisons
