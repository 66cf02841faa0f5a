"""Weight regularisers: a penalty added to the cost and its gradient.

The regularised cost is ``C = C₀ + R(W)``, where ``C₀`` is the mean mini-batch
cost and ``N`` is the size of the whole training set (Nielsen's scaling).
Only weights are regularised, never biases. The penalty's gradient is added to
the weight gradients before the optimizer step, so that with plain SGD::

    L2:  w ← w − η(∂C₀/∂w + (λ/N) w) = (1 − ηλ/N) w − η ∂C₀/∂w      (REG.l2)

which is Nielsen's weight-decay update and torch's ``SGD(weight_decay=λ/N)``
applied to the weights only, and::

    L1:  w ← w − η(∂C₀/∂w + (λ/N) sgn w)                              (REG.l1)

which shrinks every weight by the constant ηλ/N towards 0 (torch has no
built-in equivalent: add ``(λ/N) Σ|w|`` to the loss).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from manual_bp._registry import Configurable, Registry
from manual_bp._validation import check_layer_array

__all__ = ["L1", "L2", "REGULARIZERS", "Regularizer", "get_regularizer"]


class Regularizer(Configurable):
    """Base class: ``penalty(weights, N)`` and ``add_gradient(weights, grads, N)``.

    ``lmbda`` is the strength λ ≥ 0, scaled by the training-set size N.
    """

    equation = ""
    hyperparameters = ("lmbda",)

    def __init__(self, lmbda: float = 0.0) -> None:
        if isinstance(lmbda, bool) or not isinstance(lmbda, (int, float, np.integer, np.floating)):
            raise TypeError(f"lmbda must be a real number, got {lmbda!r}")
        if not np.isfinite(lmbda) or lmbda < 0:
            raise ValueError(f"lmbda must be a finite number >= 0, got {lmbda}")
        self.lmbda = float(lmbda)

    @staticmethod
    def _check_n_train(n_train: int) -> None:
        if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 1:
            raise ValueError(f"n_train (the training-set size N) must be >= 1, got {n_train!r}")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass's ``penalty`` and ``add_gradient`` check their arguments first
        (:func:`_checked_weights`): one validation path for every regulariser."""
        super().__init_subclass__(**kwargs)
        for name in ("penalty", "add_gradient"):
            if name in cls.__dict__:
                setattr(cls, name, _guarded(cls.__dict__[name]))

    def penalty(self, weights: Sequence[np.ndarray], n_train: int) -> float:
        """``R(W)``, the term added to the cost."""
        raise NotImplementedError

    def add_gradient(
        self, weights: Sequence[np.ndarray], grads: Sequence[np.ndarray], n_train: int
    ) -> None:
        """Add ``∂R/∂W`` to each weight gradient, in place."""
        raise NotImplementedError


def _checked_weights(arrays: Any, name: str, owner: str) -> list[np.ndarray]:
    """``arrays`` (a list, tuple or a model's ``ParameterList``) as a list of float32/float64
    NumPy arrays (a model's parameters, as torch's
    tensors), or one ``TypeError`` naming ``name[i]``: not a nested list, not complex, bool or
    integer values (``g += (λ/N) w`` would cast or fail inside NumPy)."""
    if isinstance(arrays, (np.ndarray, str, bytes)) or not isinstance(arrays, Sequence):
        raise TypeError(
            f"{owner}: {name} must be a sequence of arrays, got {type(arrays).__name__}"
        )
    for i, array in enumerate(arrays):
        check_layer_array(array, owner, f"{name}[{i}]")
    return list(arrays)


def _guarded(method):
    names = tuple(inspect.signature(method).parameters)[1:]  # (weights, [grads,] n_train)

    @functools.wraps(method)
    def guarded(self, *args, **named):
        owner = f"{type(self).__name__}.{method.__name__}"
        if len(args) > len(names):
            raise TypeError(f"{owner} takes {len(names)} arguments ({', '.join(names)}), "
                            f"got {len(args)}")  # fmt: skip
        values = {**dict(zip(names, args, strict=False)), **named}
        missing = [n for n in names if n not in values]
        if missing or len(values) != len(names):
            raise TypeError(f"{owner} takes the arguments {', '.join(names)}")
        self._check_n_train(values["n_train"])
        weights = values["weights"] = _checked_weights(values["weights"], "weights", owner)
        if "grads" in values:  # add_gradient: each gradient like its weight, added in place
            grads = values["grads"] = _checked_weights(values["grads"], "grads", owner)
            if len(grads) != len(weights):
                raise ValueError(f"{owner}: grads has {len(grads)} arrays for "
                                 f"{len(weights)} weights")  # fmt: skip
            for i, (w, g) in enumerate(zip(weights, grads, strict=True)):
                if g.shape != w.shape or g.dtype != w.dtype:
                    raise ValueError(f"{owner}: grads[{i}] is {g.dtype} {g.shape}, weights[{i}] "
                                     f"{w.dtype} {w.shape}; they must agree")  # fmt: skip
                if not g.flags.writeable:
                    raise ValueError(f"{owner}: grads[{i}] is read-only (added to in place)")
        with np.errstate(all="ignore"):  # an infinite weight gives inf/NaN, as torch's
            return method(self, **values)

    return guarded


REGULARIZERS = Registry("regularizer", Regularizer)


@REGULARIZERS.register
class L2(Regularizer):
    """``R = (λ/2N) Σ_w w²``, ``∂R/∂w = (λ/N) w``. Equation ``REG.l2``."""

    name = "l2"
    equation = "REG.l2"

    def penalty(self, weights: Sequence[np.ndarray], n_train: int) -> float:
        self._check_n_train(n_train)
        return 0.5 * self.lmbda / n_train * sum(float(np.vdot(W, W)) for W in weights)

    def add_gradient(
        self, weights: Sequence[np.ndarray], grads: Sequence[np.ndarray], n_train: int
    ) -> None:
        self._check_n_train(n_train)
        scale = self.lmbda / n_train
        for W, g in zip(weights, grads, strict=True):
            g += scale * W


@REGULARIZERS.register
class L1(Regularizer):
    """``R = (λ/N) Σ_w |w|``, ``∂R/∂w = (λ/N) sgn w`` (0 at w = 0). Equation ``REG.l1``.

    ``sgn 0 = 0`` is the subgradient torch's autograd of ``abs`` uses.
    """

    name = "l1"
    equation = "REG.l1"

    def penalty(self, weights: Sequence[np.ndarray], n_train: int) -> float:
        self._check_n_train(n_train)
        return self.lmbda / n_train * sum(float(np.abs(W).sum()) for W in weights)

    def add_gradient(
        self, weights: Sequence[np.ndarray], grads: Sequence[np.ndarray], n_train: int
    ) -> None:
        # REG.l1: g += (λ/N) sgn(w)
        self._check_n_train(n_train)
        scale = self.lmbda / n_train
        for W, g in zip(weights, grads, strict=True):
            g += scale * np.sign(W)


def get_regularizer(spec) -> Regularizer:
    """A :class:`Regularizer` from a name, class, instance or config dict."""
    return REGULARIZERS.get(spec)
