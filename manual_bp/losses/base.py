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

**A loss with parameters** (``LinearCrossEntropyLoss``: torch's ``linear.weight``) is the
smallest extension of the protocol, and every other loss is unchanged by it:

    named_parameters() -> [(name, array)]            torch's state-dict names; [] by default
    backward_with_params(grad_output, cache)
        -> ((d_input, d_target, ...), {name: gradient})   ({} by default)

``backward`` keeps its meaning (the arguments' gradients) for every loss; a caller that
trains the parameters calls ``backward_with_params``. Such a loss is not a model's cost
(``manual_bp.models.loss_cost`` refuses it: the model would neither train nor save it).
"""

from __future__ import annotations

import functools
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

    def named_parameters(self) -> list[tuple[str, np.ndarray]]:
        """``[(torch's state-dict name, array)]`` of the loss's parameters (none here)."""
        return []

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The parameters by name (the arrays themselves: writing into them sets them)."""
        return dict(self.named_parameters())

    def backward_with_params(
        self, grad_output: np.ndarray, cache: Any
    ) -> tuple[tuple[np.ndarray | None, ...], dict[str, np.ndarray]]:
        """``(backward(grad_output, cache), {parameter name: gradient})``; a loss without
        parameters gives ``{}``."""
        return self.backward(grad_output, cache), {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every subclass's ``forward`` checks its array arguments first (:func:`checked`):
        one validation path for the protocol method and the call alike."""
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.forward = _guarded(cls.forward)

    def __call__(self, *arrays: Any) -> np.ndarray:
        """The loss value, as ``torch.nn.<Name>()(input, target)``: the checked entry point
        (:meth:`forward` checks every array argument, naming it)."""
        if len(arrays) != len(self.arguments):
            raise TypeError(f"{type(self).__name__} takes {len(self.arguments)} arrays "
                            f"({', '.join(self.arguments)}), got {len(arrays)}")  # fmt: skip
        return self.forward(*arrays)[0]


def checked(value: Any, name: str, complex_ok: bool = False) -> Any:
    """A loss argument as an array of real numbers, or one error naming ``name``.

    ``None``, ragged nestings, and bool, object, string or (unless ``complex_ok``: torch's
    ``l1_loss``) complex arrays are refused; Python numbers pass through for the class to
    judge (GaussianNLL's float variance; CTC refuses a bare length, as torch).
    """
    if value is None:
        raise TypeError(f"{name} is None; expected an array of real numbers")
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an array of real numbers, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind == "c" and complex_ok:
        return value
    return as_array(value, name)


def _guarded(forward):
    @functools.wraps(forward)
    def guarded(self, *arrays, **kwargs):
        names = type(self).arguments
        complex_ok = bool(getattr(self, "complex_ok", False))
        arrays = tuple(
            checked(value, names[i] if i < len(names) else f"argument {i}", complex_ok)
            for i, value in enumerate(arrays)
        )
        return forward(self, *arrays, **kwargs)

    return guarded


LOSSES = Registry("loss", Loss)


register_loss = LOSSES.register


def get_loss(spec: str | Loss | type[Loss] | dict[str, Any]) -> Loss:
    """A :class:`Loss` from a name, class, instance or config dict (names as the registry
    lists them; ``_`` and ``-`` interchangeable)."""
    return LOSSES.get(spec)
