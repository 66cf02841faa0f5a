"""The stride-phase (sub-pixel) col2im of a strided convolution's input gradient, for
:class:`~manual_bp.layers.convolution_fast.ConvStep`.

col2im adds every kernel offset's slice of ``dU = W_gᵀ D_g`` onto the padded input
positions it was read from, ``u = y·s + i·d`` per axis. With stride ``s > 1`` those
positions are strided: in 2-D one NumPy inner loop per ``(c, n, y)`` of ``Wo`` numbers (the
stride-2 convolution of ``cnn-bn``: 32·64·15·9 = 276 480 loops of 15 numbers, 3.5 ms).

Write ``i·d = s·q_i + r_i`` (``0 ≤ r_i < s``) per axis: offset ``i`` of output position ``y``
lands at ``u = s·(y + q_i) + r_i``, i.e. in *phase* ``r_i`` at phase position ``a = y + q_i``
— a stride-1 shift by ``q_i``. So ∂C/∂x is built phase-major, ``(C, Πs, N, *A)``, where each
phase grid has ``A = ⌈Hp/s⌉ ≥ Ho + max q`` positions per axis. If δ is laid with the
same spans ``(C_out, N, *A)`` (zeros beyond ``Ho``; the zeros give ``dU`` zero columns
there, exactly), each offset's addition is ONE contiguous run per channel: the flat index
shifted by ``Σ q·(stride of A's axis)`` — no entry that is not zero crosses a row, a
sample or the end (``y + q_i ≤ Ho − 1 + max q < A``); the zero entries that do add ``+0``.
An interleaving copy per phase then writes ∂C/∂x in ``(N, C, *S)``, cropping the padding.

Cost: the product ``W_gᵀ D_g`` grows by ``ΠA/ΠHo`` (cnn-bn: 16·16/15·15 = 1.14, +0.5 ms);
the adds fall from 3.5 to 0.7 ms and the interleave costs what the crop did (0.7 ms), float32,
one thread. Every ∂C/∂x entry receives its offsets' terms in the kernel's C order, as the
plain col2im adds them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from manual_bp.layers._im2col import Geometry, Sizes

__all__ = ["PhasePlan", "phase_plan"]


@dataclass(frozen=True)
class PhasePlan:
    """Where each kernel offset's run goes and how the phases interleave into ∂C/∂x.

    ``span`` is ``A`` per axis; ``taps[t] = (phase, shift)`` for the ``t``-th kernel offset
    in C order (``phase`` the flat index of ``(r_i, r_j, …)`` among ``Πs`` phases, ``shift``
    the flat shift within a channel's ``(N, *A)`` run); ``copies`` lists ``(phase, dx
    slices, phase-grid slices)`` per spatial axis for every phase that holds input
    positions; ``growth = ΠA / ΠHo``.
    """

    span: Sizes
    taps: tuple[tuple[int, int], ...]
    copies: tuple[tuple[int, tuple[slice, ...], tuple[slice, ...]], ...]
    growth: float


def phase_plan(geometry: Geometry, size: Sizes, out_size: Sizes) -> PhasePlan:
    """The :class:`PhasePlan` of ``geometry`` on inputs of spatial ``size``."""
    strides, dilations = geometry.stride, geometry.dilation
    span = []
    for s, h, (front, back) in zip(strides, size, geometry.padding, strict=True):
        # ⌈Hp/s⌉ ≥ Ho + max q: Hp ≥ (Ho − 1)·s + d(k − 1) + 1 and ⌈(d(k−1) + 1)/s⌉ > q_max
        span.append(-(-(h + front + back) // s))
    # flat strides of the phase grid (N, *A): the shift of a q-offset
    flat = [math.prod(span[a + 1 :]) for a in range(len(span))]
    phase_flat = [math.prod(strides[a + 1 :]) for a in range(len(strides))]
    taps = []
    for offset in geometry.offsets():
        phase = shift = 0
        for a, i in enumerate(offset):
            q, r = divmod(i * dilations[a], strides[a])
            phase += r * phase_flat[a]
            shift += q * flat[a]
        taps.append((phase, shift))
    copies = []
    for phase, rs in enumerate(itertools.product(*(range(s) for s in strides))):
        dst, src = [], []
        for r, s, h, (front, _) in zip(rs, strides, size, geometry.padding, strict=True):
            start = max(0, -((r - front) // s))  # the first a with x = s·a + r − front ≥ 0
            x0 = s * start + r - front
            count = len(range(x0, h, s))
            if count == 0:  # no input position in this phase on this axis
                break
            dst.append(slice(x0, h, s))
            src.append(slice(start, start + count))
        else:
            copies.append((phase, tuple(dst), tuple(src)))
    growth = math.prod(span) / max(1, math.prod(out_size))
    return PhasePlan(tuple(span), tuple(taps), tuple(copies), growth)
