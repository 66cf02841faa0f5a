"""torch oracles of second-order and per-sample quantities (float64, torch.func).

The model is written as a function of ONE flat parameter vector θ (``parameter_arrays()``
order), so ``torch.func.hessian`` gives the whole Hessian, ``jvp(grad(·))`` gives ``H v``,
``jacrev`` of the network output gives the Jacobian ``J`` for ``G = Jᵀ H_ℓ J``, and
``vmap(grad(·))`` gives per-sample gradients. The GGN split point is written out here as
:data:`MATCHING_HEADS` (the convention under test — the costs' ``Fold`` rows with ``head``
— not its code).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from manual_bp.layers.activation import ActivationLayer
from manual_bp.layers.dense import Dense
from reference.components import torch_activation, torch_cost, torch_fused_output

__all__ = ["MATCHING_HEADS", "PREDICTIVE", "TorchModel", "mc_draw_moments"]

#: (cost, output activation) pairs whose loss is taken at the pre-activation (Schraudolph
#: 2002): ``ℓ(z) = C(σ(z), y)`` convex in ``z``.
MATCHING_HEADS = frozenset(
    {("log-likelihood", "softmax"), ("cross-entropy", "sigmoid"), ("kl-divergence", "log-softmax")}
)

T = torch.float64


class TorchModel:
    """A Network or Dense/activation Sequential as torch functions of the flat θ."""

    def __init__(self, model: Any, x: np.ndarray, y: np.ndarray) -> None:
        self.model = model
        self.shapes = [tuple(p.shape) for p in model.parameter_arrays()]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.theta = torch.tensor(
            np.concatenate([p.ravel() for p in model.parameter_arrays()]), dtype=T
        )
        x = model.prepare_inputs(x)
        self.x = torch.tensor(x, dtype=T)
        self.y = torch.tensor(model.prepare_targets(y, x.shape[0]), dtype=T)
        # layers: ("dense", iw, ib) or ("act", activation)
        names = {n: i for i, (n, _) in enumerate(model.named_parameters())}
        self.layers = []
        prefixes = [name for name, _ in model.named_children()]  # "0", "1", … or own names
        for k, layer in enumerate(model.layers):  # every model is a stack (Network too)
            if isinstance(layer, Dense):
                w, b = f"{prefixes[k]}.weight", f"{prefixes[k]}.bias"
                self.layers.append(("dense", names[w], names.get(b)))
            elif isinstance(layer, ActivationLayer):
                self.layers.append(("act", layer.activation))
            elif type(layer).__name__ in ("Identity", "Flatten") or (
                type(layer).__name__ == "Dropout" and (layer.p == 0 or not layer.training)
            ):
                continue  # out = x on (batch, features) inputs
            else:
                raise TypeError(layer)
        self.cost = model.cost
        last = self.layers[-1]
        self.split = last[0] == "act" and (self.cost.name, last[1].name) in MATCHING_HEADS

    def params(self, theta: torch.Tensor) -> list[torch.Tensor]:
        pieces = torch.split(theta, self.sizes)
        return [p.reshape(s) for p, s in zip(pieces, self.shapes, strict=True)]

    def output(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The network output f at the GGN split point."""
        p = self.params(theta)
        layers = self.layers[:-1] if self.split else self.layers
        a = x
        for layer in layers:
            if layer[0] == "dense":
                a = torch.nn.functional.linear(
                    a, p[layer[1]], None if layer[2] is None else p[layer[2]]
                )
            else:
                a = torch_activation(layer[1])(a)
        return a

    def loss_of_output(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean ℓ(f, y) over the rows of f."""
        if self.split:
            act = self.layers[-1][1]
            fused = torch_fused_output(act, self.cost)
            if fused is not None:
                return fused(f, y)
            return torch_cost(self.cost)(torch_activation(act)(f), y)
        if self.cost.name == "cross-entropy":
            # torch's BCE double backward adds an ε to a(1 − a) (relative error ~1e-11 at
            # a = ½); the same function by xlogy has the exact second derivative.
            return (
                -(torch.special.xlogy(y, f) + torch.special.xlogy(1 - y, 1 - f)).sum() / f.shape[0]
            )
        if self.cost.name == "multi-margin":
            # torch's multi_margin_loss has no forward-mode AD: the same hinge sum, by hand.
            hinge = torch.relu(self.cost.margin - (f * y).sum(1, keepdim=True) + f)
            return torch.where(y == 1, 0.0, hinge).sum() / f.shape[0]
        return torch_cost(self.cost)(f, y)

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        return self.loss_of_output(self.output(theta, self.x), self.y)

    # ------------------------------------------------------------------ oracles
    def hessian(self) -> np.ndarray:
        return torch.func.hessian(self.loss)(self.theta).numpy(force=True)

    def hvp(self, v: np.ndarray) -> np.ndarray:
        vt = torch.tensor(v, dtype=T)
        return torch.func.jvp(torch.func.grad(self.loss), (self.theta,), (vt,))[1].numpy(force=True)

    def ggn(self, absolute: bool = False) -> np.ndarray:
        """``Jᵀ H_f J`` with ``J = jacrev(f)(θ)`` and ``H_f`` the Hessian of the mean loss in f.

        ``absolute=True``: ``|J|ᵀ |H_f| |J|``, the magnitude of the summed terms (the
        a-priori rounding scale of every GGN entry, for cancelling sums).
        """
        f = self.output(self.theta, self.x)
        J = torch.func.jacrev(lambda t: self.output(t, self.x).reshape(-1))(self.theta)
        H = torch.func.hessian(lambda g: self.loss_of_output(g.reshape(f.shape), self.y))(
            f.reshape(-1)
        )
        if absolute:
            J, H = J.abs(), H.abs() + 1.0 / f.shape[0]  # + the unit mass of p (see floor)
        return (J.T @ H @ J).numpy(force=True)

    def output_hessian(self) -> np.ndarray:
        """Per-sample ``∇²_f ℓ`` (n, m, m), not divided by n."""
        f = self.output(self.theta, self.x)

        def one(fi, yi):
            return self.loss_of_output(fi[None], yi[None])

        return torch.func.vmap(torch.func.hessian(one))(f, self.y).numpy(force=True)

    def per_sample_gradients(self) -> np.ndarray:
        """``∇θ C_x`` for every sample, ``(n, P)`` (not divided by n)."""

        def one(theta, xi, yi):
            return self.loss_of_output(self.output(theta, xi[None]), yi[None])

        return torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(
            self.theta, self.x, self.y
        ).numpy(force=True)

    def residual_floor(self) -> float:
        """Magnitude of the σ''·g terms: ``max|∇_f ℓₓ| · max(1, |x|, |f|)²``.

        The residual terms of the Hessian, ``Σₖ gₖ ∇²σₖ``, are sums of products of the output
        gradient with activations on both sides of each weight; where they cancel to
        rounding noise (a saturated softmax: Hessian ~1e-17) a relative bound is meaningless,
        so comparisons of H use ``c·ε`` times this magnitude as a floor.
        """
        f = self.output(self.theta, self.x)
        g = torch.func.grad(lambda h: self.loss_of_output(h, self.y))(f) * f.shape[0]
        size = max(1.0, float(self.x.abs().max()), float(f.abs().max()))
        return float(g.abs().max()) * size * size

    def floor(self) -> float:
        """Scale of cancelling unit-mass terms: ``max(1, |x|, |f|)²`` (+ the residual floor).

        A saturated softmax or sigmoid evaluates ``p(1 − p)``-type terms whose parts have
        magnitude ``p ≤ 1`` while the result is ~1e-9; products with the activations on
        both sides of a weight give this magnitude for every curvature entry.
        """
        f = self.output(self.theta, self.x)
        size = max(1.0, float(self.x.abs().max()), float(f.abs().max()))
        return size * size + self.residual_floor()

    def gradient(self) -> np.ndarray:
        return torch.func.grad(self.loss)(self.theta).numpy(force=True)


# ---------------------------------------------------------------------- Monte-Carlo moments
#: (cost, head) -> predictive distribution p(ŷ | f): the convention under test, restated.
PREDICTIVE = {
    ("quadratic", None): "normal",
    ("categorical-cross-entropy", None): "categorical",
    ("bce-logits", None): "bernoulli",
    ("log-likelihood", "softmax"): "categorical",
    ("cross-entropy", "sigmoid"): "bernoulli",
    ("kl-divergence", "log-softmax"): "categorical",
}


def mc_draw_moments(model: Any, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Exact moments of ONE draw of the Monte-Carlo diag GGN and KFAC ``B`` (torch, float64).

    A draw is ``(1/n) Σₓ Tₓ(ŷₓ)`` with ``ŷₓ ~ p(y | fₓ)`` independent across samples and
    ``Tₓ(ŷ) = c·gₓ(ŷ)²`` (diagonal) or ``c·δₓ(ŷ)δₓ(ŷ)ᵀ`` (``B``; ``δ`` = the bias gradient),
    ``gₓ(ŷ) = ∇θ ℓ(fₓ, ŷ)`` from torch. For a loss ``ℓ = m·NLL`` (KL targets of mass
    ``m = Σy``) the outcome targets are ``m·e_k`` and ``c = 1/m``, since
    ``E[∇ℓ∇ℓᵀ] = m²F`` while ``∇²ℓ = mF``. Finite supports (categorical: ``m`` outcomes,
    Bernoulli: ``2^m``) are enumerated; for ``N(f, I)`` the gradient is linear in the noise,
    ``g = Aε``, and Gaussian moments give the variance.

    Returns
    -------
    dict with, per sample, ``"mean"``, ``"var"`` and ``"range"`` (a bound on
    ``|Tₓ/n − E Tₓ/n|``; for the Gaussian ``√var``, the scale of its sub-exponential tail)
    of the diagonal (``(n, P)``) and of ``B`` flattened layer by layer (``"b_mean"`` …).
    """
    tm = TorchModel(model, x, np.asarray(y))
    head = tm.layers[-1][1].name if tm.split else None
    kind = PREDICTIVE[(tm.cost.name, head)]
    f = tm.output(tm.theta, tm.x).detach()
    n, m = f.shape
    offsets = np.cumsum([0, *tm.sizes])
    dense = [op for op in tm.layers if op[0] == "dense"]
    if any(op[2] is None for op in dense):
        raise ValueError(
            "mc_draw_moments reads δ from the bias gradients: every layer needs a bias"
        )
    bias = [slice(offsets[op[2]], offsets[op[2] + 1]) for op in dense]

    def grads(xi, targets):  # ∇θ ℓ(f(θ, xi), ŷ) for every row ŷ of targets, (O, P)
        def one(theta, yi):
            return tm.loss_of_output(tm.output(theta, xi[None]), yi[None])

        return torch.func.vmap(torch.func.grad(one), in_dims=(None, 0))(tm.theta, targets)

    out: dict[str, list] = {k: [] for k in ("mean", "var", "range", "b_mean", "b_var", "b_range")}
    for i in range(n):
        if kind == "normal":
            A = grads(tm.x[i], f[i] + torch.eye(m, dtype=T)).numpy(force=True)  # g = Aᵀε
            d = (A * A).sum(0) / n
            Sb = [A[:, s].T @ A[:, s] / n for s in bias]
            var_b = [np.outer(np.diag(S), np.diag(S)) + S * S for S in Sb]  # Isserlis
            _append(
                out,
                (d, 2 * d * d, np.sqrt(2) * d),
                [(S, v, np.sqrt(v)) for S, v in zip(Sb, var_b, strict=True)],
            )
            continue
        if kind == "categorical":
            p = torch.softmax(f[i], 0)
            mass = float(tm.y[i].sum()) if tm.cost.name == "kl-divergence" else 1.0
            targets, probs = mass * torch.eye(m, dtype=T), p
        else:  # Bernoulli: every binary vector
            s = torch.sigmoid(f[i])
            bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=m)), dtype=T)
            targets, mass = bits, 1.0
            probs = torch.prod(torch.where(bits == 1, s, 1 - s), dim=1)
        g = grads(tm.x[i], targets).numpy(force=True)
        w = probs.numpy(force=True)[:, None]
        c = 1.0 / (mass * n)  # c·g² with the draw's 1/n
        Tb = [np.einsum("oi,oj->oij", g[:, s], g[:, s]).reshape(len(w), -1) for s in bias]
        _append(out, _moments(c * g * g, w), [_moments(c * t, w) for t in Tb])
    return {
        k: np.stack([np.concatenate([np.ravel(a) for a in row]) for row in v])
        if k.startswith("b_")
        else np.stack(v)
        for k, v in out.items()
    }


def _moments(T: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, variance and max deviation of outcomes ``T`` (O, K) with probabilities ``w``."""
    mean = (w * T).sum(0)
    dev = T - mean
    support = w[:, 0] > 0
    return mean, (w * dev * dev).sum(0), np.abs(dev[support]).max(0)


def _append(out: dict, diag: tuple, blocks: list[tuple]) -> None:
    """Store one sample's (mean, var, range) of the diagonal and of every layer's ``B``."""
    for key, value in zip(("mean", "var", "range"), diag, strict=True):
        out[key].append(value)
    for j, key in enumerate(("b_mean", "b_var", "b_range")):
        out[key].append([block[j] for block in blocks])
