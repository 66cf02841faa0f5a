"""The :class:`Loss` protocol of torch-named loss modules, the reduction and the registry
(``docs/losses.md``).

A loss here means what torch's module of the same name means: the same constructor
signature and defaults, the same input forms, and torch's ``reduction`` — ``'mean'`` over
every element (or over the summed class weights of the counted targets, where torch does
that), ``'sum'``, or ``'none'`` (the unreduced elements). The library's own costs
(:mod:`manual_bp.costs`) keep Nielsen's convention instead — the mini-batch cost is the
mean of per-sample costs — and are a separate family (``docs/conventions.md``).

Protocol, the layer protocol's pair for a function of several arrays::

    forward(input, target, ...) -> (value, cache)   value: 0-d for 'mean'/'sum'
    backward(grad_output, cache) -> (d_input, d_target, ...)

``backward`` returns one entry per positional argument of ``forward``, in order: the
gradient with respect to that argument, or ``None`` where torch gives none (integer class
targets; a target torch detaches). ``grad_output`` has the shape of ``value``; it is a
random array in the tests, never ones.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from manual_bp._registry import Configurable, Registry
from manual_bp._validation import as_array

__all__ = [
    "LOSSES",
    "REDUCTIONS",
    "Loss",
    "check_reduction",
    "get_loss",
    "reduce",
    "reduce_vjp",
    "register_loss",
]

#: torch's reductions: ``'none'`` keeps the elements, ``'mean'`` and ``'sum'`` give a 0-d value.
REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: object) -> str:
    """``reduction`` if it is one of torch's three, else ``ValueError`` naming it."""
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, "
                         f"got {reduction!r}")  # fmt: skip
    return reduction


def reduce(elements: np.ndarray, reduction: str, total: float | None = None) -> np.ndarray:
    """torch's reduction of the unreduced loss ``elements`` (``LOSS.reduction``).

    ``'none'``: the elements; ``'sum'``: ``Σ ℓᵢ``; ``'mean'``: ``Σ ℓᵢ / total`` with
    ``total`` the element count by default (a weighted loss passes ``Σ w_{yᵢ}``). An empty
    input's mean is NaN, as torch's (0/0).
    """
    if reduction == "none":
        return elements
    summed = np.sum(elements)
    if reduction == "sum":
        return np.asarray(summed)
    count = elements.size if total is None else total
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(summed / elements.dtype.type(count))


def reduce_vjp(
    grad_output: np.ndarray, shape: tuple[int, ...], reduction: str, total: float | None = None
) -> np.ndarray:
    """``∂value/∂ℓ`` applied to ``grad_output`` (``LOSS.reduction``): the upstream gradient of
    every element — ``grad_output`` itself for ``'none'``, broadcast for ``'sum'``, and
    divided by the count (or ``total``) for ``'mean'``."""
    grad_output = np.asarray(grad_output)
    if reduction == "none":
        return grad_output
    if reduction == "sum":
        return np.broadcast_to(grad_output, shape)
    count = int(np.prod(shape)) if total is None else total
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.broadcast_to(grad_output / grad_output.dtype.type(count), shape)


class Loss(Configurable):
    """Base class of torch-named loss modules.

    Subclasses set ``name`` (the registry's lower-case name), ``equation_value`` and
    ``equation_grad`` (IDs ``LOSS.<name>`` and ``LOSS.<name>.grad``), list their
    constructor keywords in ``hyperparameters``, and implement :meth:`forward` and
    :meth:`backward`.
    """

    equation_value: ClassVar[str] = ""
    equation_grad: ClassVar[str] = ""
    #: The positional arguments of :meth:`forward`, by torch's names (``input``, ``target``).
    arguments: ClassVar[tuple[str, ...]] = ("input", "target")

    def __init__(self, reduction: str = "mean") -> None:
        self.reduction = check_reduction(reduction)

    def forward(self, *arrays: np.ndarray) -> tuple[np.ndarray, Any]:
        """``(value, cache)``; ``value`` as torch returns it for ``self.reduction``."""
        raise NotImplementedError

    def backward(self, grad_output: np.ndarray, cache: Any) -> tuple[np.ndarray | None, ...]:
        """The gradient of ``⟨grad_output, value⟩`` with respect to each positional argument
        of :meth:`forward`, in order (``None`` where torch gives none)."""
        raise NotImplementedError

    def __call__(self, *arrays: Any) -> np.ndarray:
        """The loss value, as ``torch.nn.<Name>()(input, target)``: the checked entry point.

        Each argument is named in the error when it is not a real array (complex, bool,
        object and string arrays are refused; integers are refused where a float is meant
        by the subclass's own checks in :meth:`forward`).
        """
        if len(arrays) != len(self.arguments):
            raise TypeError(f"{type(self).__name__} takes {len(self.arguments)} arrays "
                            f"({', '.join(self.arguments)}), got {len(arrays)}")  # fmt: skip
        checked = []
        for value, name in zip(arrays, self.arguments, strict=True):
            complex_array = isinstance(value, np.ndarray) and value.dtype.kind == "c"
            if complex_array and getattr(self, "complex_ok", False):
                checked.append(np.asarray(value))  # torch's l1_loss takes complex tensors
            else:
                checked.append(as_array(value, name))
        return self.forward(*checked)[0]


LOSSES = Registry("loss", Loss)


register_loss = LOSSES.register


def get_loss(spec: str | Loss | type[Loss] | dict[str, Any]) -> Loss:
    """A :class:`Loss` from a name, class, instance or config dict (names as the registry
    lists them; ``_`` and ``-`` interchangeable)."""
    return LOSSES.get(spec)
