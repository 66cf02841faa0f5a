"""torch's CPU random stream in NumPy: the generator after ``torch.manual_seed`` and its
uniform draws, bit for bit (RReLU's slopes: its readable form and its fast step draw
through these, so both see the same stream)."""

from __future__ import annotations

import numpy as np

__all__ = ["torch_generator", "torch_uniform"]


def torch_generator(seed: int) -> np.random.MT19937:
    """torch's CPU generator after ``torch.manual_seed(seed)``: MT19937 seeded by
    ``init_genrand(seed mod 2³²)``, which NumPy's legacy seeding is."""
    bit_generator = np.random.MT19937()
    bit_generator._legacy_seeding(int(seed) % 2**32)
    return bit_generator


def torch_uniform(
    bit_generator: np.random.MT19937, count: int, low: float, high: float, dtype: np.dtype
) -> np.ndarray:
    """``count`` draws of torch's ``uniform_real_distribution<double>(low, high)`` in
    ``dtype``: two 32-bit outputs ``(hi, lo)`` → ``u = ((hi·2³² + lo) mod 2⁵³)·2⁻⁵³`` →
    ``u (high − low) + low`` in double, the bounds rounded to ``dtype`` first, the draw
    rounded to ``dtype`` last (ATen's ``rrelu_with_noise``: the same bits as torch)."""
    low, high = float(dtype.type(low)), float(dtype.type(high))
    raw = bit_generator.random_raw(2 * count).reshape(count, 2)
    bits = ((raw[:, 0] & np.uint64(2**21 - 1)) << np.uint64(32)) | raw[:, 1]
    return (bits * 2.0**-53 * (high - low) + low).astype(dtype)
