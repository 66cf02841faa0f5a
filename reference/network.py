"""The torch oracle of a whole :class:`manual_bp.Network`.

:func:`torch_run` rebuilds the network's forward in torch (float64 by
default) from the *same* parameters, runs ``C.backward()`` and returns every
intermediate autograd can give: ``∂C/∂Wˡ``, ``∂C/∂bˡ``, ``∂C/∂zˡ`` of every
layer (``retain_grad``), ``∂C/∂aᴸ`` and ``∂C/∂x``.
:func:`torch_per_sample_gradients` gives per-sample gradients with
``torch.func.vmap(torch.func.grad(...))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from manual_bp import Network
from manual_bp._validation import as_targets
from reference.components import torch_activation, torch_cost, torch_fused_output

__all__ = ["TorchRun", "torch_per_sample_gradients", "torch_run"]


@dataclass
class TorchRun:
    """Autograd's view of one forward/backward pass, as NumPy arrays.

    ``z_grads[l]`` is ``∂C/∂zˡ`` of the *mean* cost, i.e. ``δˡ / n``;
    :attr:`deltas` rescales to the per-sample ``δˡ_x``.
    """

    cost: float
    zs: list[np.ndarray]
    activations: list[np.ndarray]
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    z_grads: list[np.ndarray]
    output_grad: np.ndarray | None
    input_grad: np.ndarray

    @property
    def deltas(self) -> list[np.ndarray]:
        n = self.input_grad.shape[0]
        return [g * n for g in self.z_grads]


def _tensor(array: np.ndarray, dtype: torch.dtype, grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.asarray(array), dtype=dtype, requires_grad=grad)


def _forward(net: Network, params, x: torch.Tensor):
    weights, biases = params
    zs, activations = [], [x]
    a = x
    for W, b, activation in zip(weights, biases, net.activations, strict=True):
        z = torch.nn.functional.linear(a, W, b)  # z = a Wᵀ + b
        a = torch_activation(activation)(z)
        zs.append(z)
        activations.append(a)
    return zs, activations


def _loss(net: Network, zs, activations, y: torch.Tensor, fused: bool) -> torch.Tensor:
    fused_loss = torch_fused_output(net.activations[-1], net.cost) if fused else None
    if fused_loss is not None:
        return fused_loss(zs[-1], y)
    return torch_cost(net.cost)(activations[-1], y)


def torch_run(
    net: Network,
    x: np.ndarray,
    y: np.ndarray,
    *,
    dtype: torch.dtype = torch.float64,
    fused: bool = True,
) -> TorchRun:
    """Forward and backward of ``net`` on ``(x, y)`` in torch.

    Parameters
    ----------
    fused : bool
        Use torch's fused stable loss of ``zᴸ`` where one exists for the output
        pair (sigmoid + cross-entropy -> ``binary_cross_entropy_with_logits``).
        The function of ``zᴸ`` is the same; ``∂C/∂aᴸ`` is then not available.
    """
    y = as_targets(y, net.sizes[-1], np.shape(x)[0], np.float64)
    weights = [_tensor(W, dtype, grad=True) for W in net.weights]
    biases = [_tensor(b, dtype, grad=True) for b in net.biases]
    xt = _tensor(x, dtype, grad=True)
    yt = _tensor(y, dtype)
    zs, activations = _forward(net, (weights, biases), xt)
    for t in (*zs, activations[-1]):
        t.retain_grad()
    loss = _loss(net, zs, activations, yt, fused)
    loss.backward()
    output_grad = activations[-1].grad
    return TorchRun(
        cost=float(loss.detach()),
        zs=[z.detach().numpy() for z in zs],
        activations=[a.detach().numpy() for a in activations],
        weights=[W.grad.numpy() for W in weights],
        biases=[b.grad.numpy() for b in biases],
        z_grads=[z.grad.numpy() for z in zs],
        output_grad=None if output_grad is None else output_grad.numpy(),
        input_grad=xt.grad.numpy(),
    )


def torch_per_sample_gradients(
    net: Network, x: np.ndarray, y: np.ndarray, *, dtype: torch.dtype = torch.float64
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-sample ``∂C_x/∂Wˡ`` ``(n, n_l, n_{l−1})`` and ``∂C_x/∂bˡ`` ``(n, n_l)`` via vmap."""
    y = as_targets(y, net.sizes[-1], np.shape(x)[0], np.float64)
    weights = tuple(_tensor(W, dtype) for W in net.weights)
    biases = tuple(_tensor(b, dtype) for b in net.biases)

    def sample_cost(params, xi, yi):
        zs, activations = _forward(net, params, xi[None, :])
        return _loss(net, zs, activations, yi[None, :], fused=True)

    per_sample = torch.func.vmap(torch.func.grad(sample_cost), in_dims=(None, 0, 0))
    grad_w, grad_b = per_sample((weights, biases), _tensor(x, dtype), _tensor(y, dtype))
    return [g.numpy() for g in grad_w], [g.numpy() for g in grad_b]
