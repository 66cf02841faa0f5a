"""Stochastic gradient descent, plain and with (Nesterov) momentum, as ``torch.optim.SGD``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from manual_bp.optimizers.base import OPTIMIZERS, Optimizer, check_hyperparameter

__all__ = ["SGD"]


@OPTIMIZERS.register
class SGD(Optimizer):
    """SGD with optional momentum, dampening, Nesterov and coupled weight decay.

    Equations ``OPT.sgd`` (plain), ``OPT.sgd-momentum``, ``OPT.sgd-nesterov``,
    ``OPT.weight-decay``; torch's exact conventions (``torch.optim.SGD``)::

        g  = ∂C/∂θ + wd·θ                                  (OPT.weight-decay)
        b₁ = g;   bₜ = μ·bₜ₋₁ + (1 − τ)·g                   (buffer = first gradient)
        d  = g + μ·bₜ  (Nesterov)   or   d = bₜ
        θ ← θ − η·d

    Parameters
    ----------
    lr : float
        The learning rate η > 0.
    momentum : float
        μ ∈ [0, 1); 0 is plain SGD ``θ ← θ − η g`` (``OPT.sgd``).
    dampening : float
        τ ∈ [0, 1]; not applied on the first step.
    nesterov : bool
        Look-ahead ``g + μ b``; needs μ > 0 and τ = 0 (as torch).
    weight_decay : float
        Coupled L2 on every array passed, biases included (torch's ``weight_decay``).
    """

    name = "sgd"
    equation = "OPT.sgd"
    hyperparameters = ("lr", "momentum", "dampening", "nesterov", "weight_decay")
    _buffers = ("momentum_buffer",)

    def __init__(
        self,
        lr: float = 0.1,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        self.lr = check_hyperparameter("lr", lr, closed="neither")
        self.momentum = check_hyperparameter("momentum", momentum, high=1.0)
        self.dampening = check_hyperparameter("dampening", dampening, high=1.0, closed="both")
        self.weight_decay = check_hyperparameter("weight_decay", weight_decay)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError(
                f"nesterov needs momentum > 0 and dampening = 0, got momentum={momentum}, "
                f"dampening={dampening}"
            )
        self.reset()

    def get_config(self) -> dict:
        # Plain SGD keeps Nielsen's one-key config; other keys only when used.
        config = super().get_config()
        defaults = {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}
        return {k: v for k, v in config.items() if defaults.get(k, object()) != v}

    def step(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        params, grads = self._as_lists(params, grads)
        first = self.t == 0
        self.t += 1  # every rule counts its steps, plain SGD too
        if not self.momentum and not self.weight_decay:
            for p, g in zip(params, grads, strict=True):  # OPT.sgd: θ ← θ − η g
                p -= self.lr * g
            return
        states = self._state(params)
        for p, g, s in zip(params, grads, states, strict=True):
            g = self._decayed(p, g, self.weight_decay, s["grad"])  # OPT.weight-decay
            if self.momentum:
                buf, d = s["momentum_buffer"], s["scratch"]
                if first:  # OPT.sgd-momentum: torch starts the buffer at the first gradient
                    np.copyto(buf, g)
                else:  # bₜ = μ bₜ₋₁ + (1 − τ) g
                    buf *= self.momentum
                    np.multiply(g, 1.0 - self.dampening, out=d)
                    buf += d
                if self.nesterov:  # OPT.sgd-nesterov: look ahead, d = g + μ bₜ
                    np.multiply(buf, self.momentum, out=d)
                    d += g
                    g = d
                else:
                    g = buf
            np.multiply(g, self.lr, out=s["scratch"])
            p -= s["scratch"]
