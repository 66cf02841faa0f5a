"""Fractional max pooling ``FractionalMaxPool2d/3d`` (torch's; Graham 2014).

Per sample ``n``, channel ``c`` and axis ``a`` (input size ``S``, output ``O``, window ``k``)
a sample ``α ∈ [0, 1)`` fixes the window starts (torch's ``generate_intervals``)::

    step = (S − k)/(O − 1),   seq[y] = ⌊(y + α)·step⌋ − ⌊α·step⌋  (y < O − 1),   seq[O−1] = S − k

(``⌊·⌋``: truncation of a non-negative number, in the input's precision), and
``out[n, c, y] = max`` over ``Π_a [seq_a[y_a], seq_a[y_a] + k_a)`` — torch's first maximum
(a NaN: the last). The samples are torch's ``_random_samples`` ``(N, C, D)`` if given (its
tests pass them: the layer is then deterministic), else drawn at each forward from the
layer's own generator (``seed``; its state saved as extra state). In 2-d torch reads the
sample of the W axis first (``samples[..., 0]`` is W's, ``[..., 1]`` H's); in 3-d the order
is ``(T, H, W)``. Given the windows, the layer is a selection (equation
``LAYER.fractional-maxpool``; products ``PROD.fractional-maxpool.*`` from
:class:`~manual_bp.layers.pooling_select.SelectionProducts`). Derivation: ``docs/pooling.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers._unbatched import UnbatchedCache, unbatched
from manual_bp.layers.base import Layer, check_input, register_layer
from manual_bp.layers.convolution import _tuple
from manual_bp.layers.pooling_geometry import fractional_starts
from manual_bp.layers.pooling_select import (
    SelectCache,
    SelectionProducts,
    select_scatter,
    window_maximum,
)
from manual_bp.layers.pooling_steps import FractionalMaxPoolStep

__all__ = ["FractionalMaxPool2d", "FractionalMaxPool3d", "fractional_starts"]

_AXES = {2: "(C, H, W)", 3: "(C, D, H, W)"}


class FractionalMaxPoolNd(SelectionProducts, Layer):
    """Fractional max pooling on ``dims`` axes (equation ``LAYER.fractional-maxpool``):
    ``out[n, c, y] = x[n, c, m(y)]``, ``∂C/∂x[n, c, u] = Σ_{y : m(y) = u} δ[n, c, y]``."""

    dims = 2
    batched_ndim = 4
    equation = "LAYER.fractional-maxpool"
    product_equations = (
        "PROD.fractional-maxpool.vjp",
        "PROD.fractional-maxpool.jvp",
        "PROD.fractional-maxpool.residual",
    )
    hyperparameters = ("kernel_size", "output_size", "output_ratio", "return_indices")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.batched_ndim = cls.dims + 2

    def __init__(
        self,
        kernel_size: int | tuple[int, ...],
        output_size: int | tuple[int, ...] | None = None,
        output_ratio: float | tuple[float, ...] | None = None,
        return_indices: bool = False,
        _random_samples: Any = None,
        *,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        d = self.dims
        self.kernel = _tuple(kernel_size, "kernel_size", d, 1)
        if (output_size is None) == (output_ratio is None):
            raise ValueError(
                f"{type(self).__name__} needs exactly one of output_size and output_ratio, "
                f"got output_size={output_size!r}, output_ratio={output_ratio!r}"
            )
        self.sizes = None if output_size is None else _tuple(output_size, "output_size", d, 1)
        self.ratios = None
        if output_ratio is not None:
            items = output_ratio if isinstance(output_ratio, (tuple, list)) else (output_ratio,) * d
            if len(items) != d or not all(
                isinstance(r, (int, float, np.number)) and 0 < r < 1 for r in items
            ):
                raise ValueError(f"output_ratio must be between 0 and 1 (got {output_ratio!r})")
            self.ratios = tuple(float(r) for r in items)
        if not isinstance(return_indices, (bool, np.bool_)):
            raise TypeError(f"return_indices must be True or False, got {return_indices!r}")
        self.kernel_size, self.output_size, self.output_ratio = (
            kernel_size,
            output_size,
            output_ratio,
        )
        self.return_indices = bool(return_indices)
        self._random_samples = None if _random_samples is None else np.asarray(_random_samples)
        if self._random_samples is not None and (
            self._random_samples.ndim != 3 or self._random_samples.shape[-1] != d
        ):
            raise ValueError(
                f"_random_samples must have shape (N, C, {d}), got {self._random_samples.shape}"
            )
        self._generator = np.random.default_rng(seed)

    # ------------------------------------------------------------------ the samples
    def reset_parameters(self, rng: np.random.Generator) -> None:
        """A fresh sample generator seeded from ``rng`` (a seeded model is reproducible)."""
        self._generator = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))

    def get_extra_state(self) -> dict[str, Any]:
        """The sample generator's state (JSON-serialisable): a reload draws the same
        windows; explicit ``_random_samples`` ride along."""
        samples = None if self._random_samples is None else self._random_samples.tolist()
        return {"generator": self._generator.bit_generator.state, "samples": samples}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if set(state) != {"generator", "samples"}:
            raise ValueError(
                f"{self!r}: extra state must have keys 'generator' and 'samples', "
                f"got {sorted(state)}"
            )
        saved = state["generator"]
        kind = getattr(np.random, str(saved.get("bit_generator")), None)
        if kind is None:
            raise ValueError(f"{self!r}: unknown bit generator {saved.get('bit_generator')!r}")
        bit_generator = kind()
        bit_generator.state = saved
        self._generator = np.random.Generator(bit_generator)
        samples = state["samples"]
        self._random_samples = None if samples is None else np.asarray(samples, dtype=np.float64)

    # ------------------------------------------------------------------ shapes
    def _out(self, size: tuple[int, ...]) -> tuple[int, ...]:
        if self.sizes is not None:
            return self.sizes
        return tuple(int(s * r) for s, r in zip(size, self.ratios, strict=True))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        if len(shape) != self.dims + 1:
            raise ValueError(f"{self!r} needs per-sample inputs {_AXES[self.dims]}, got {shape}")
        out = self._out(shape[1:])
        # torch's rule: O + k − 1 ≤ S in 2-d, O + k − 1 < S in 3-d
        slack = 0 if self.dims == 2 else 1
        for s, o, k in zip(shape[1:], out, self.kernel, strict=True):
            if o + k - 1 + slack > s:
                bound = "≤" if self.dims == 2 else "<"
                raise ValueError(
                    f"{self!r}: kernel {self.kernel} too large for output {out} on input {shape} "
                    f"(needs output + kernel − 1 {bound} input, as torch)"
                )
        return (shape[0], *out)

    @classmethod
    def from_shape(cls, input_shape, *args, n_outputs=None, **kwargs) -> Layer:
        layer = cls(*args, **kwargs)
        layer.output_shape(tuple(input_shape))
        return layer

    def _samples(self, x: np.ndarray) -> np.ndarray:
        """``(N, C, D)`` samples: torch's explicit ones (their first N rows), else drawn from
        the generator."""
        n, c = x.shape[:2]
        if self._random_samples is not None:
            # torch's rule: at least N rows (the first N are used), exactly C channels
            rows, channels = self._random_samples.shape[:2]
            if rows < n or channels != c:
                raise ValueError(
                    f"{self!r}: _random_samples has shape {self._random_samples.shape}, "
                    f"input needs (≥ {n}, {c}, {self.dims})"
                )
            return self._random_samples[:n].astype(x.dtype, copy=False)
        return self._generator.random((n, c, self.dims)).astype(x.dtype)

    # ------------------------------------------------------------------ forward/backward
    def __call__(self, x: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """torch's module call: ``out``, or ``(out, indices)`` with ``return_indices``."""
        out, cache = self.forward(x)
        return (out, self.indices(cache)) if self.return_indices else out

    def indices(self, cache: SelectCache | UnbatchedCache) -> np.ndarray:
        """torch's ``indices`` (``int64``, out's shape): the winner's flat index in ``S``."""
        if isinstance(cache, UnbatchedCache):
            return self.indices(cache.inner)[0]
        return cache.indices

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, SelectCache]:
        """``LAYER.fractional-maxpool``: ``(N, C, *S) -> (N, C, *O)``; every ``(n, c)`` plane
        has its own windows (one :func:`window_maximum` per plane)."""
        check_input(x, self, ndim=self.dims + 2, name="x")
        out = self.output_shape(x.shape[1:])[1:]
        samples = self._samples(x)
        n, c = x.shape[:2]
        result = np.empty((n, c, *out), dtype=x.dtype)
        indices = np.empty((n, c, *out), dtype=np.int64)
        # torch's sample order: 2-d (W, H), 3-d (T, H, W)
        order = (1, 0) if self.dims == 2 else (0, 1, 2)
        for i in range(n):
            for j in range(c):
                starts = [
                    fractional_starts(samples[i, j, order[a]], x.shape[2 + a], out[a], k)
                    for a, k in enumerate(self.kernel)
                ]
                ends = [s + k for s, k in zip(starts, self.kernel, strict=True)]
                plane = x[i : i + 1, j : j + 1]
                r, idx = window_maximum(plane, starts, ends)
                result[i, j], indices[i, j] = r[0, 0], idx[0, 0]
        return result, SelectCache(x, indices, (samples,))

    def backward(
        self, dout: np.ndarray, cache: SelectCache
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``LAYER.fractional-maxpool``: each window's δ added at its winner."""
        x = cache.input
        expected = cache.indices.shape
        if not isinstance(dout, np.ndarray) or dout.shape != expected:
            raise ValueError(
                f"{self!r}: upstream gradient has shape {np.shape(dout)}, expected {expected}"
            )
        return select_scatter(dout, cache.indices, x.shape, x.dtype), {}

    def fast_step(self) -> Any:
        """Training's fast form: every plane's windows at once
        (:class:`~manual_bp.layers.pooling_steps.FractionalMaxPoolStep`), the same samples,
        maxima, winners and ∂C/∂x bits as :meth:`forward`/:meth:`backward`."""
        return FractionalMaxPoolStep(self)

    def __repr__(self) -> str:
        target = (
            f"output_size={self.output_size!r}"
            if self.output_size is not None
            else f"output_ratio={self.output_ratio!r}"
        )
        return f"{type(self).__name__}({self.kernel_size!r}, {target})"


@register_layer
@unbatched
class FractionalMaxPool2d(FractionalMaxPoolNd):
    """``torch.nn.FractionalMaxPool2d`` (equation ``LAYER.fractional-maxpool``)."""

    name, dims = "fractional-maxpool2d", 2


@register_layer
@unbatched
class FractionalMaxPool3d(FractionalMaxPoolNd):
    """``torch.nn.FractionalMaxPool3d`` (equation ``LAYER.fractional-maxpool``)."""

    name, dims = "fractional-maxpool3d", 3
