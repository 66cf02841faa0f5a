"""Special functions come from ``scipy.special``; nothing elementwise runs as a Python loop.

Issue 22. GELU's float64 ``erf`` (``ACT.gelu``; float32 uses ``manual_bp.activations.erf32``,
tested in ``tests/test_fast_gelu.py``) and the costs' ``x ln y`` (``COST.cross-entropy``,
``COST.log-likelihood``, ``COST.kl-divergence``) are SciPy ufuncs. Checked here against torch
at the edges (both tails, large ``|z|``, exactly at 0) and for dtype: float32 in gives
float32 out with no cast anywhere (a SciPy loop that returned float64 would fail here, not
be silently rounded back).
"""

from __future__ import annotations

import math
import pathlib
import re

import numpy as np
import pytest
import torch
from scipy import special

from manual_bp.activations import get_activation
from manual_bp.costs.base import _xlogy

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "manual_bp"

#: Both tails, large |z|, the left-tail cancellation region (z ≈ −8.3 in float64, ≈ −5.6 in
#: float32 — 1 + erf is exactly 0 below it, in torch and here), ±0 and tiny z.
EDGES = np.array(
    [-1e4, -1e3, -40.0, -9.0, -8.3, -7.0, -5.6, -3.0, -1.0, -1e-30, -0.0, 0.0, 1e-30,
     0.5, 1.0, 3.0, 5.6, 8.3, 9.0, 40.0, 1e3, 1e4]
)  # fmt: skip


def _torch_gelu(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    zt = torch.from_numpy(z).requires_grad_()
    a = torch.nn.functional.gelu(zt)
    (d,) = torch.autograd.grad(a.sum(), zt)
    return a.detach().numpy(), d.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_erf_form_matches_torch_at_the_edges(dtype):
    """ACT.gelu (erf form): σ and σ' within a few ε·(1 + |z|) of torch; exact where torch is."""
    z = EDGES.astype(dtype)
    gelu = get_activation("gelu")
    a = gelu.forward(z)
    d = gelu.derivative(z, a)
    assert a.dtype == dtype and d.dtype == dtype
    ta, td = _torch_gelu(z)
    eps = float(np.finfo(dtype).eps)
    scale = 1.0 + np.abs(z.astype(np.float64))
    assert np.all(np.abs(a.astype(np.float64) - ta) <= 4 * eps * scale), (z, a, ta)
    assert np.all(np.abs(d.astype(np.float64) - td) <= 4 * eps * scale), (z, d, td)
    # Exactly at 0: σ(0) = 0 and σ'(0) = Φ(0) = ½, in both.
    at0 = z == 0
    assert np.all(a[at0] == 0) and np.all(d[at0] == 0.5) and np.all(td[at0] == 0.5)
    # Right tail: erf = 1 exactly, so σ = z and σ' = 1 exactly, as torch.
    right = z >= 9
    assert np.array_equal(a[right], z[right]) and np.array_equal(a[right], ta[right])
    assert np.all(d[right] == 1) and np.all(td[right] == 1)
    # Left tail: torch's cancellation of 1 + erf gives −0 (not −1e−149): sign bit included.
    left = z <= -9
    assert np.all(a[left] == 0) and np.all(np.signbit(a[left]))
    assert np.array_equal(np.signbit(a[left]), np.signbit(ta[left]))
    far_left = z <= -40  # φ(z) underflows too, so σ' = Φ + zφ is exactly 0
    assert np.all(d[far_left] == 0) and np.all(td[far_left] == 0)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_float32_in_float32_out_without_a_cast(approximate):
    """Every method of GELU keeps float32, and scipy.special.erf's own float32 loop does."""
    z = np.linspace(-12, 12, 97, dtype=np.float32)
    assert special.erf(z).dtype == np.float32  # the ufunc itself: no float64 round trip
    gelu = get_activation({"name": "gelu", "approximate": approximate})
    a = gelu.forward(z)
    g = np.ones_like(z)
    for value in (
        a,
        gelu.derivative(z, a),
        gelu.backward(g, z, a),
        gelu.second_derivative(z, a),
        gelu.jvp(g, z, a),
    ):
        assert value.dtype == np.float32


def test_scipy_erf_float32_equals_math_erf_rounded():
    """The replaced ``np.frompyfunc(math.erf)`` gave math.erf(float(x)) rounded to float32;
    scipy's float32 loop gives the same bits (the GELU change is exact for float32)."""
    x = np.concatenate(
        [np.linspace(-6, 6, 4001), np.geomspace(1e-38, 1, 200), -np.geomspace(1e-38, 1, 200)]
    ).astype(np.float32)
    expected = np.array([math.erf(float(v)) for v in x]).astype(np.float32)
    np.testing.assert_array_equal(special.erf(x), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_xlogy_matches_torch_at_the_edges(dtype):
    """``x ln y``: 0 ln 0 = 0, 0 ln ∞ = 0, x ln 0 = −∞, NaN propagates — torch.special.xlogy."""
    x = np.array([0.0, 0.0, 0.0, 1.0, 2.5, 0.0, 1.0, 1e-30, 3.0, 0.7], dtype=dtype)
    y = np.array([0.0, np.inf, 1e-30, 0.0, np.inf, np.nan, np.nan, 1e-30, 1.0, 0.3], dtype=dtype)
    with np.errstate(all="raise"):
        ours = _xlogy(x, y)
    theirs = torch.special.xlogy(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    assert ours.dtype == dtype
    np.testing.assert_array_equal(ours, theirs)


def test_xlogy_float32_is_torchs_to_the_bit():
    """float32 ``x ln y`` with the log taken in double: bit-identical to torch (NumPy's float32
    ``x * np.log(y)`` is up to 4 ulp off the float64 truth)."""
    rng = np.random.default_rng(0)
    x = (rng.random(20_000) * 10).astype(np.float32)
    y = rng.random(20_000).astype(np.float32)
    theirs = torch.special.xlogy(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_array_equal(_xlogy(x, y), theirs)


def test_no_elementwise_python_loop_in_the_package():
    """No ``np.frompyfunc`` or ``np.vectorize`` in manual_bp: a special function is a ufunc."""
    pattern = re.compile(r"\b(frompyfunc|vectorize)\s*\(")
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, offenders
