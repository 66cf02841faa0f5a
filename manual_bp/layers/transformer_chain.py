"""A Transformer layer as a chain of the library's blocks (``TF.layer-chain``).

A Transformer layer is a composition of residual blocks and layer norms; its chain is
built once from the layer's named children (the same objects, not copies):

* post-norm (``norm_first=False``): ``[Residual(SA, Drop₁), LN₁, Residual(FF), LN₂]``;
* pre-norm (``norm_first=True``): ``[Residual(LN₁, SA, Drop₁), Residual(LN₂, FF)]``;

with ``FF = Drop₂ ∘ Linear₂ ∘ Drop ∘ act ∘ Linear₁`` (torch's ``_sa_block``/``_ff_block``;
the decoder adds ``Residual(CA, Drop₂)`` / ``Residual(LN₂, CA, Drop₂)`` after the first
block). Forward, backward and every V-axis product are the chain's (``STACK.chain``,
``LAYER.residual``): the backward is the composition of the children's VJPs, nothing else.
:class:`Chain` maps the chain's positional names (``"0.1.weight"``) to torch's
(``linear1.weight``) both ways.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers.base import Layer
from manual_bp.layers.containers import (
    Residual,
    stack_backward,
    stack_forward,
    stack_input_jvp,
    stack_input_vjp,
    stack_param_jvp,
    stack_param_vjp,
    stack_residual,
)
from manual_bp.layers.containers_products import split_named, stack_tangents
from manual_bp.layers.steps import GenericStep
from manual_bp.layers.transformer_cross import CrossAttend, CrossBlock

__all__ = ["Chain", "ChainStep", "chain_fast_step"]


class Chain:
    """The blocks of one Transformer layer (``TF.layer-chain``) and the map between their
    parameter names and torch's. ``plan`` lists ``(is_residual, layers)``: a residual
    block is a :class:`Residual` of its layers; a lone layer norm is used as it is."""

    def __init__(self, owner: Any, plan: list[tuple[bool, list[Layer]]]) -> None:
        names = {id(layer): name for name, layer in owner.named_children()}
        names[id(owner.sa_step)] = "self_attn"
        if getattr(owner, "ca_step", None) is not None:
            names[id(owner.ca_step)] = "multihead_attn"
        self.layers: list[Layer] = []
        self.to_torch: list[dict[str, str]] = []  # per block: chain name -> torch name
        for residual, members in plan:
            cross = any(isinstance(member, CrossAttend) for member in members)
            block = (CrossBlock if cross else Residual)(members) if residual else members[0]
            table = {}
            for i, member in enumerate(members):
                for name in member.params:
                    key = f"{i}.{name}" if residual else name
                    table[key] = f"{names[id(member)]}.{name}"
            self.layers.append(block)
            self.to_torch.append(table)
        self.from_torch = {
            torch: (b, key) for b, table in enumerate(self.to_torch) for key, torch in table.items()
        }

    @classmethod
    def joined(cls, chains: list[Chain], prefixes: list[str], tail: Any = None) -> Chain:
        """One chain of several layers' blocks, torch's names prefixed (``"layers.0."``);
        ``tail`` an optional final ``(prefix, layer)`` (a stack's ``norm``)."""
        new = cls.__new__(cls)
        new.layers, new.to_torch = [], []
        for chain, prefix in zip(chains, prefixes, strict=True):
            new.layers += chain.layers
            new.to_torch += [{k: prefix + t for k, t in table.items()} for table in chain.to_torch]
        if tail is not None:
            prefix, layer = tail
            new.layers.append(layer)
            new.to_torch.append({k: prefix + k for k in layer.params})
        new.from_torch = {
            t: (b, key) for b, table in enumerate(new.to_torch) for key, t in table.items()
        }
        return new

    def rename(self, per_block: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The blocks' gradients ``[{chain name: g}]`` under torch's names."""
        return {
            self.to_torch[b][key]: g
            for b, grads in enumerate(per_block)
            for key, g in grads.items()
        }

    def split(self, named: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        """Torch-named tangents as the chain's positional names ``"<block>.<chain name>"``."""
        out = {}
        for name, value in (named or {}).items():
            if name not in self.from_torch:
                raise ValueError(
                    f"unknown parameter {name!r}; parameters: {sorted(self.from_torch)}"
                )
            b, key = self.from_torch[name]
            out[f"{b}.{key}"] = value
        return out

    def unsplit(self, named: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = split_named(named, len(self.layers))
        return self.rename(parts)

    # the walks (batch-first arrays in and out)
    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[Any]]:
        return stack_forward(self.layers, x)

    def backward(self, dout: np.ndarray, caches: list[Any]) -> tuple[np.ndarray, dict]:
        dx, grads = stack_backward(self.layers, dout, caches)
        assert dx is not None
        return dx, self.rename(grads)

    def input_vjp(self, caches, M):
        return stack_input_vjp(self.layers, caches, M)

    def param_vjp(self, caches, M, sum_batch=True):
        return self.unsplit(stack_param_vjp(self.layers, caches, M, sum_batch=sum_batch))

    def input_jvp(self, caches, T):
        return stack_input_jvp(self.layers, caches, T)

    def param_jvp(self, caches, T_params):
        return stack_param_jvp(self.layers, caches, self.split(T_params))

    def tangent(self, caches, T, T_params):
        """``J_x T + Σ_p J_p T_p`` up the chain (either may be None: zero)."""
        return stack_tangents(self.layers, caches, T, self.split(T_params))[-1]

    def residual(self, caches, dout, T, T_params, R_dout=None):
        """The R-operator's pass down the chain; ``R_dout`` None: the second-order residual."""
        r_x, r_params = stack_residual(
            self.layers, caches, dout, T, self.split(T_params), R_dout=R_dout
        )
        return r_x, self.unsplit(r_params)


class ChainStep:
    """The fast form of a chain for training (``TF.layer-chain``): every block's own fast
    step (a residual block's is its branch's steps, the attention's the fused
    :class:`~manual_bp.layers.attention_fast.AttentionStep`) in order, with the trainer's
    torch-named gradient buffers handed to each block under the block's own names."""

    def __init__(self, chain: Chain) -> None:
        self.blocks = [
            (layer.fast_step(), table)
            for layer, table in zip(chain.layers, chain.to_torch, strict=True)
        ]
        trainable = [i for i, (_, names) in enumerate(self.blocks) if names]
        self.lowest = trainable[0] if trainable else len(self.blocks)
        self._split: tuple[dict, list[dict]] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        for step, _ in self.blocks:
            x = step.forward(x)
        return x

    def _grads(self, grads: dict) -> list[dict]:
        if self._split is None or self._split[0] is not grads:
            split = [{k: grads[t] for k, t in names.items()} for _, names in self.blocks]
            self._split = (grads, split)
        return self._split[1]

    def backward(self, dout: np.ndarray, grads: dict, need_dx: bool) -> np.ndarray | None:
        per_block = self._grads(grads)
        bottom = 0 if need_dx else self.lowest
        g = dout
        for i in range(len(self.blocks) - 1, bottom - 1, -1):
            g = self.blocks[i][0].backward(g, per_block[i], need_dx or i > bottom)
        return g if need_dx else None


def chain_fast_step(layer: Any, chain: Chain) -> Any:
    """:class:`ChainStep` for a batch-first layer; time-major: the readable form."""
    return ChainStep(chain) if layer.batch_first else GenericStep(layer)
