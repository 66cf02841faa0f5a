"""torch twins of any library model for the curvature oracles (float64, ``torch.func``).

The twin is :func:`reference.interop.to_torch` of the model with every normalisation
module replaced by the same function in plain ops (:class:`PlainNorm`): torch 2.13's
double backward through ``F.layer_norm`` and train-mode ``F.batch_norm`` is wrong
(``docs/curvature.md``, "torch's second derivatives through normalisation"), so second-
order oracles must not differentiate them twice. The plain twin is checked first-order
against torch's own module (``tests/test_curvature_layers.py``).

The loss is the model's: the cost on the rows of the output (its last axis), the mean over
the counted rows (``ignore_index``: rows of zero targets dropped), the softmax-type head
taken into the loss at the GGN split exactly as :mod:`manual_bp.curvature.chain` does.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from manual_bp.curvature.chain import as_chain
from reference.components import torch_activation, torch_cost, torch_fused_output

__all__ = ["PlainNorm", "Twin", "plain_norms"]

T = torch.float64


class PlainNorm(nn.Module):
    """``γ ⊙ (x − μ)/√(σ² + ε) + β`` (or RMS) in plain ops over ``axes`` of a regrouped view,
    with torch's parameter names: batch, layer, group, instance and RMS norm."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.kind = type(module).__name__
        self.eps = module.eps if module.eps is not None else torch.finfo(T).eps
        self.inner = module  # keeps weight/bias/buffers under their names
        for name in ("weight", "bias"):
            p = getattr(module, name, None)
            if p is not None:
                self.register_parameter(name, p)

    def _stats(self, x: torch.Tensor, dims: tuple[int, ...]):
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
        return mean, var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, w, b = self.inner, getattr(self, "weight", None), getattr(self, "bias", None)
        if self.kind.startswith("BatchNorm"):
            shape = (1, -1) + (1,) * (x.ndim - 2)
            if m.training or m.running_mean is None:
                mean, var = self._stats(x, (0, *range(2, x.ndim)))
            else:
                mean, var = m.running_mean.reshape(shape), m.running_var.reshape(shape)
            y = (x - mean) / torch.sqrt(var + self.eps)
        elif self.kind in ("LayerNorm", "RMSNorm"):
            dims = tuple(range(x.ndim - len(m.normalized_shape), x.ndim))
            shape = m.normalized_shape
            if self.kind == "RMSNorm":
                y = x / torch.sqrt((x * x).mean(dim=dims, keepdim=True) + self.eps)
            else:
                mean, var = self._stats(x, dims)
                y = (x - mean) / torch.sqrt(var + self.eps)
        elif self.kind == "GroupNorm":
            g = x.reshape(x.shape[0], m.num_groups, -1)
            mean, var = self._stats(g, (2,))
            y = ((g - mean) / torch.sqrt(var + self.eps)).reshape(x.shape)
            shape = (1, -1) + (1,) * (x.ndim - 2)
        else:  # InstanceNorm: per sample and channel over the positions
            mean, var = self._stats(x, tuple(range(2, x.ndim)))
            y = (x - mean) / torch.sqrt(var + self.eps)
            shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.kind.startswith("BatchNorm"):
            shape = (1, -1) + (1,) * (x.ndim - 2)
        if w is not None:
            y = y * w.reshape(shape)
        if b is not None:
            y = y + b.reshape(shape)
        return y


_NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.RMSNorm,
)


def plain_norms(module: nn.Module) -> nn.Module:
    """``module`` with every normalisation submodule replaced by its :class:`PlainNorm`."""
    for name, child in list(module.named_children()):
        if isinstance(child, _NORMS):
            setattr(module, name, PlainNorm(child))
        else:
            plain_norms(child)
    return module


def _encoder(layer: Any) -> nn.Module:
    """``nn.TransformerEncoderLayer`` with the library layer's parameters (``to_torch`` maps
    the expanded form only)."""
    module = nn.TransformerEncoderLayer(
        layer.d_model,
        layer.nhead,
        layer.dim_feedforward,
        dropout=0.0,
        activation=layer.activation,
        layer_norm_eps=layer.layer_norm_eps,
        batch_first=layer.batch_first,
        norm_first=layer.norm_first,
        dtype=T,
    )
    module.load_state_dict({k: torch.tensor(np.array(v)) for k, v in layer.params.items()})
    return module


def _to_torch(model: Any) -> nn.Module:
    """:func:`reference.interop.to_torch`, encoder layers built here."""
    from reference.interop import _module_from_layer

    modules = []
    for i, (name, layer) in enumerate(model.named_children()):
        if type(layer).__name__ == "TransformerEncoderLayer":
            modules.append((name, _encoder(layer)))
        else:
            module = _module_from_layer(layer, i).to(T)
            module.load_state_dict({k: torch.tensor(np.array(v)) for k, v in _state(layer).items()})
            modules.append((name, module))
    out = nn.Sequential(OrderedDict(modules))
    out.train(model.training)
    return out


def _state(layer: Any) -> dict[str, Any]:
    return dict(layer.named_parameters()) | dict(layer.named_buffers())


def _no_running_updates(module: nn.Module) -> nn.Module:
    """Training-mode batch norms without running statistics (the same function: batch
    statistics; torch.func refuses the in-place update of a captured buffer)."""
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.training:
            sub.running_mean = sub.running_var = sub.num_batches_tracked = None
    return module


class Twin:
    """The model as torch functions of ONE flat parameter vector (``parameter_arrays()``
    order): ``loss(θ)``, the output at the GGN split, per-sample losses."""

    def __init__(self, model: Any, x: np.ndarray, y: np.ndarray, plain: bool = True) -> None:
        chain = as_chain(model)
        self.chain = chain
        self.model = model
        module = _to_torch(model)
        self.module = plain_norms(module) if plain else _no_running_updates(module)
        for sub in self.module.modules():  # attention's eval fast path is not differentiable
            if isinstance(sub, (nn.MultiheadAttention, nn.TransformerEncoderLayer)):
                sub.train(True)
        self.names = [name for name, _ in model.named_parameters()]
        self.shapes = [tuple(p.shape) for p in model.parameter_arrays()]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.theta = torch.tensor(
            np.concatenate([np.ravel(p) for p in model.parameter_arrays()]), dtype=T
        )
        x, y = chain.data(x, y)
        self.x = torch.tensor(x) if x.dtype.kind in "iu" else torch.tensor(x, dtype=T)
        self.y = torch.tensor(y, dtype=T)
        self.folded = chain.head.name != "identity"
        children = list(self.module.children())
        self.body = nn.Sequential(*children[:-1]) if self.folded else self.module
        self.body_names = self.names
        buffers = dict(self.module.named_buffers())
        self.buffers = buffers
        self.counted = self.y.reshape(-1, self.y.shape[-1]).abs().sum(1) != 0
        if chain.ignore_index is None:
            self.counted = torch.ones_like(self.counted)

    def params(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        pieces = torch.split(theta, self.sizes)
        return {n: p.reshape(s) for n, p, s in zip(self.names, pieces, self.shapes, strict=True)}

    def output(self, theta: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The network output ``f`` at the GGN split point (attention by the math kernel of
        ``scaled_dot_product_attention``: the fused CPU kernel has no forward-mode AD)."""
        x = self.x if x is None else x
        named = {**self.params(theta), **self.buffers}
        with sdpa_kernel(SDPBackend.MATH):
            return torch.func.functional_call(self.body, named, (x,), strict=False)

    def row_losses(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """ℓ per row ``(R,)``: the cost on rows, the head folded in."""
        fr, yr = f.reshape(-1, f.shape[-1]), y.reshape(-1, y.shape[-1])
        cost = self.chain.cost
        if self.folded:
            fused = torch_fused_output(self.chain.head, cost)
            if fused is not None:
                return torch.stack([fused(fr[i : i + 1], yr[i : i + 1]) for i in range(len(fr))])
            act = torch_activation(self.chain.head)
            return torch.stack(
                [torch_cost(cost)(act(fr[i : i + 1]), yr[i : i + 1]) for i in range(len(fr))]
            )
        return torch.stack([torch_cost(cost)(fr[i : i + 1], yr[i : i + 1]) for i in range(len(fr))])

    def loss_of_output(self, f: torch.Tensor, weights: torch.Tensor | None = None):
        """``Σ_r w_r ℓ_r``: the mean over the counted rows (``weights`` override)."""
        per_row = self.row_losses(f, self.y)
        if weights is None:
            weights = self.counted.to(T) / self.counted.sum()
        return (per_row * weights).sum()

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        return self.loss_of_output(self.output(theta))

    # ------------------------------------------------------------------ oracles
    def gradient(self) -> np.ndarray:
        return torch.func.grad(self.loss)(self.theta).numpy()

    def hessian(self) -> np.ndarray:
        return torch.func.hessian(self.loss)(self.theta).numpy()

    def hvp(self, v: np.ndarray) -> np.ndarray:
        vt = torch.tensor(v, dtype=T)
        return torch.func.jvp(torch.func.grad(self.loss), (self.theta,), (vt,))[1].numpy()

    def jacobian(self) -> np.ndarray:
        """``∂f/∂θ`` ``(|f|, P)``."""
        return torch.func.jacrev(lambda t: self.output(t).reshape(-1))(self.theta).numpy()

    def output_hessian(self, weights: torch.Tensor | None = None) -> np.ndarray:
        f = self.output(self.theta).detach()
        return torch.func.hessian(lambda g: self.loss_of_output(g.reshape(f.shape), weights))(
            f.reshape(-1)
        ).numpy()

    def ggn(self) -> np.ndarray:
        J = self.jacobian()
        return J.T @ self.output_hessian() @ J

    def sample_weights(self, i: int) -> torch.Tensor:
        """``n ×`` sample ``i``'s share of the row weights (``CURV.rows``)."""
        f_shape = self.output(self.theta).shape
        w = self.counted.to(T) / self.counted.sum()
        own = torch.zeros(f_shape[:-1], dtype=T)
        own[i] = 1
        return w * own.reshape(-1) * f_shape[0]

    def per_sample_hessian_diagonals(self) -> np.ndarray:
        n = self.output(self.theta).shape[0]
        out = []
        for i in range(n):
            w = self.sample_weights(i)
            h = torch.func.hessian(lambda t, w=w: self.loss_of_output(self.output(t), w))(
                self.theta
            )
            out.append(torch.diagonal(h).numpy())
        return np.stack(out)

    def per_sample_ggn_diagonals(self) -> np.ndarray:
        J = self.jacobian()
        n = self.output(self.theta).shape[0]
        return np.stack(
            [np.diag(J.T @ self.output_hessian(self.sample_weights(i)) @ J) for i in range(n)]
        )
