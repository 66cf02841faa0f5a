"""torch's lazy convolutions: ``LazyConv1d/2d/3d`` and ``LazyConvTranspose1d/2d/3d``.

A lazy convolution is built without ``in_channels``; its first input supplies it
(``x.shape[1]``, or ``x.shape[0]`` for an unbatched sample, as torch's
``_get_in_channels``). Until then it holds no parameters. How torch's
``UninitializedParameter`` maps here (``docs/convolution.md``, "Lazy convolutions"):

* **parameters** — an uninitialised layer's ``params`` is empty and ``in_channels`` is 0
  (torch's value): ``named_parameters()`` and the state dict have no entry for it (torch
  lists an ``UninitializedParameter`` that holds no numbers);
  :meth:`~_LazyConv.has_uninitialized_params` says so, as torch's.
* **first forward** (or :meth:`~_LazyConv.materialize` with a per-sample shape, or
  ``from_shape`` in a spec) — the parameters are allocated and initialised exactly as the
  eager class's (same ``weight_init``/``bias_init``/``seed``, torch's U(±1/√fan_in) by
  default). The layer then IS the eager layer (a subclass of it: every method, equation
  and product is the eager class's); unlike torch it keeps its class name (torch switches
  the class to ``cls_to_become``), so a model records which of its layers were lazy.
* **saving** — the configuration holds ``in_channels`` (0 while uninitialised; the
  keyword-only ``in_channels`` of the constructor, 0 by default, rebuilds a materialised
  layer) and ``dtype`` by name; an uninitialised layer saves no arrays and loads
  uninitialised again, a materialised one saves and loads as the eager class does.
* **a Sequential's flat parameter buffer** is laid out when the model is built, so a lazy
  layer must be materialised first: a spec (``lazy-conv2d(16, 5)``) materialises it
  through ``from_shape`` at once; a model built from layer objects calls
  :meth:`~_LazyConv.materialize` with the shape its input shape gives.

The arithmetic, equation IDs and products are the eager classes' (``LAYER.conv2d`` …).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers.base import Layer, layer_dtype, register_layer
from manual_bp.layers.convolution import Conv1d, Conv2d, Conv3d
from manual_bp.layers.convolution_transpose import (
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
)

__all__ = [
    "LazyConv1d",
    "LazyConv2d",
    "LazyConv3d",
    "LazyConvTranspose1d",
    "LazyConvTranspose2d",
    "LazyConvTranspose3d",
]


class _LazyConv:
    """Mixin before the eager class in the MRO: the constructor without ``in_channels``,
    the inference of it at the first input (:meth:`materialize`)."""

    cls_to_become: type[Layer]

    def _lazy_init(self, args: dict[str, Any]) -> None:
        eager = self.cls_to_become
        dtype = layer_dtype(args.pop("dtype"), type(self).__name__, args.pop("device"))
        seed, in_channels = args.pop("seed"), args.pop("in_channels")
        # validate every option now, as torch's constructor does: an eager twin whose
        # in_channels (= groups) every check accepts, whose parameters are then dropped
        eager.__init__(self, args["groups"], dtype=dtype, seed=0, **args)  # type: ignore[misc]
        self.params = {}
        self.in_channels = 0
        self.dtype = dtype.name
        self._lazy_args, self._lazy_seed = args, seed
        if isinstance(in_channels, bool) or not isinstance(in_channels, (int, np.integer)):
            raise TypeError(f"in_channels must be an integer (0: lazy), got {in_channels!r}")
        if in_channels:
            self._become(self._checked(int(in_channels)))

    def has_uninitialized_params(self) -> bool:
        """True until the first input (torch's ``LazyModuleMixin`` method)."""
        return not self.params

    def _checked(self, channels: int) -> int:
        groups = self._lazy_args["groups"]
        if channels < 1 or channels % groups:
            raise ValueError(
                f"{type(self).__name__}: in_channels={channels} (the input's channels) must be a "
                f"positive multiple of groups={groups}"
            )
        return channels

    def _in_channels(self, shape: tuple[int, ...], batched: bool) -> int:
        dims = self.cls_to_become.dims  # type: ignore[attr-defined]
        if len(shape) not in ((dims + 1, dims + 2) if batched else (dims + 1,)):
            raise ValueError(
                f"{type(self).__name__} infers in_channels from a ({dims + 2}-axis) batch or a "
                f"({dims + 1}-axis) sample, got shape {shape}"
            )
        return self._checked(int(shape[1] if len(shape) == dims + 2 else shape[0]))

    def materialize(self, input_shape: tuple[int, ...]) -> Layer:
        """Infer ``in_channels`` from a per-sample ``input_shape`` ``(C, *S)``, allocate and
        initialise the parameters (nothing if they exist); returns ``self``."""
        if self.has_uninitialized_params():
            self._become(self._in_channels(tuple(input_shape), batched=False))
        return self  # type: ignore[return-value]

    def _become(self, channels: int) -> None:
        training = self.training  # type: ignore[attr-defined]
        eager, args = self.cls_to_become, self._lazy_args
        eager.__init__(self, channels, dtype=self.dtype, seed=self._lazy_seed, **args)  # type: ignore[misc]
        self.train(training)  # type: ignore[attr-defined]
        del self._lazy_args, self._lazy_seed  # the eager attributes say it all now

    def forward(self, x: np.ndarray, *args: Any, **kwargs: Any) -> tuple[np.ndarray, Any]:
        """The first input sets ``in_channels``; then the eager class's forward."""
        if self.has_uninitialized_params():
            if not isinstance(x, np.ndarray):
                raise TypeError(f"{type(self).__name__}: x must be a NumPy array, got {type(x)}")
            self._become(self._in_channels(x.shape, batched=True))
        return super().forward(x, *args, **kwargs)  # type: ignore[misc]

    def output_shape(self, input_shape: tuple[int, ...], *args: Any) -> tuple[int, ...]:
        """The eager layer's output shape for ``input_shape`` (nothing is materialised)."""
        if not self.has_uninitialized_params():
            return super().output_shape(input_shape, *args)  # type: ignore[misc]
        channels = self._in_channels(tuple(input_shape), batched=False)
        twin = self.cls_to_become(channels, dtype=self.dtype, seed=0, **self._lazy_args)
        return twin.output_shape(input_shape, *args)

    def reset_parameters(self, rng: np.random.Generator) -> None:
        """Nothing to reset before the parameters exist; the eager rule after."""
        if not self.has_uninitialized_params():
            super().reset_parameters(rng)  # type: ignore[misc]

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> Layer:
        """``lazy-conv2d(16, 5)`` on ``(C, H, W)``: materialised at once, ``in_channels = C``."""
        return cls(*args, **kwargs).materialize(tuple(input_shape))

    def __repr__(self) -> str:
        if not self.has_uninitialized_params():
            return super().__repr__()  # type: ignore[misc]
        args = self._lazy_args
        return f"{type(self).__name__}({args['out_channels']}, {args['kernel_size']!r})"


def _with_dtype(names: tuple[str, ...]) -> tuple[str, ...]:
    """The eager class's hyperparameters (``in_channels``: 0 while lazy) and the dtype."""
    return (*names, "dtype")


class _LazyConvNd(_LazyConv):
    def __init__(
        self,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | str = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        weight_init: str | dict[str, Any] = "torch",
        bias_init: str | dict[str, Any] = "torch",
        implementation: str = "fast",
        seed: int | np.random.Generator | None = None,
        in_channels: int = 0,
    ) -> None:
        args = dict(locals())
        del args["self"]
        self._lazy_init(args)


class _LazyConvTransposeNd(_LazyConv):
    def __init__(
        self,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] = 0,
        output_padding: int | tuple[int, ...] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, ...] = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        weight_init: str | dict[str, Any] = "torch",
        bias_init: str | dict[str, Any] = "torch",
        implementation: str = "fast",
        seed: int | np.random.Generator | None = None,
        in_channels: int = 0,
    ) -> None:
        args = dict(locals())
        del args["self"]
        self._lazy_init(args)


@register_layer
class LazyConv1d(_LazyConvNd, Conv1d):
    """``torch.nn.LazyConv1d``: :class:`Conv1d` with ``in_channels`` from the first input
    (``LAYER.conv1d``, ``PROD.conv1d.*`` once materialised)."""

    name = "lazy-conv1d"
    cls_to_become = Conv1d
    hyperparameters = _with_dtype(Conv1d.hyperparameters)


@register_layer
class LazyConv2d(_LazyConvNd, Conv2d):
    """``torch.nn.LazyConv2d``: :class:`Conv2d` with ``in_channels`` from the first input
    (``LAYER.conv2d``, ``PROD.conv2d.*`` once materialised)."""

    name = "lazy-conv2d"
    cls_to_become = Conv2d
    hyperparameters = _with_dtype(Conv2d.hyperparameters)


@register_layer
class LazyConv3d(_LazyConvNd, Conv3d):
    """``torch.nn.LazyConv3d``: :class:`Conv3d` with ``in_channels`` from the first input
    (``LAYER.conv3d``, ``PROD.conv3d.*`` once materialised)."""

    name = "lazy-conv3d"
    cls_to_become = Conv3d
    hyperparameters = _with_dtype(Conv3d.hyperparameters)


@register_layer
class LazyConvTranspose1d(_LazyConvTransposeNd, ConvTranspose1d):
    """``torch.nn.LazyConvTranspose1d``: :class:`ConvTranspose1d` with ``in_channels`` from
    the first input (``LAYER.conv-transpose1d`` once materialised)."""

    name = "lazy-conv-transpose1d"
    aliases = ()
    cls_to_become = ConvTranspose1d
    hyperparameters = _with_dtype(ConvTranspose1d.hyperparameters)


@register_layer
class LazyConvTranspose2d(_LazyConvTransposeNd, ConvTranspose2d):
    """``torch.nn.LazyConvTranspose2d``: :class:`ConvTranspose2d` with ``in_channels`` from
    the first input (``LAYER.conv-transpose2d`` once materialised)."""

    name = "lazy-conv-transpose2d"
    aliases = ()
    cls_to_become = ConvTranspose2d
    hyperparameters = _with_dtype(ConvTranspose2d.hyperparameters)


@register_layer
class LazyConvTranspose3d(_LazyConvTransposeNd, ConvTranspose3d):
    """``torch.nn.LazyConvTranspose3d``: :class:`ConvTranspose3d` with ``in_channels`` from
    the first input (``LAYER.conv-transpose3d`` once materialised)."""

    name = "lazy-conv-transpose3d"
    aliases = ()
    cls_to_become = ConvTranspose3d
    hyperparameters = _with_dtype(ConvTranspose3d.hyperparameters)
