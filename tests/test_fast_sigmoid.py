"""Sigmoid's fast forward (``Sigmoid.forward_into``) is SciPy's ``expit``, one ufunc for the
four passes ``1/(1 + e^{−z})`` took (issue 22: Nielsen's step is call-count bound). Checked
here: torch's values in float64 and float32 (random ``z`` across the saturating ranges and
exactly at the edges), no warning and exactly 0 below ``z = −709`` (float64) / ``−88``
(float32) where ``e^{−z}`` overflows, NaN propagated, the dtype kept, and the same bits on
one thread and on two (the rows split by ``ActivationStep``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_bp
from manual_bp.activations import get_activation
from manual_bp.layers.activation import ActivationLayer

SIGMOID = get_activation("sigmoid")
#: z where e^{−z} overflows, either side and at it, and the other saturating edge
EDGES = {
    "float64": [-np.inf, -800.0, -709.8, -709.7, -709.0, -40.0, -0.0, 0.0, 36.0, 800.0, np.inf],
    "float32": [-np.inf, -104.0, -88.8, -88.7, -88.0, -17.0, -0.0, 0.0, 17.0, 104.0, np.inf],
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([1.0, 10.0, 100.0, 1000.0]))
def test_forward_into_is_torchs_sigmoid(dtype, seed, scale):
    z = (np.random.default_rng(seed).standard_normal((7, 13)) * scale).astype(dtype)
    z[0, : len(EDGES[dtype])] = EDGES[dtype]
    out = np.empty_like(z)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning, unlike 1/(1 + exp(−z))
        a = SIGMOID.forward_into(z, out)
    assert a is out and a.dtype == z.dtype
    ref = torch.sigmoid(torch.from_numpy(z)).numpy()
    rtol = 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(a, ref, rtol=rtol, atol=0)
    assert np.all(a[z <= EDGES[dtype][2]] == 0.0) and np.all(a[z == np.inf] == 1.0)


def test_nan_propagates():
    z = np.array([[np.nan, 0.0]])
    assert np.isnan(SIGMOID.forward_into(z, np.empty_like(z))[0, 0])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_one_and_two_threads_give_the_same_bits(dtype):
    """Rows split over two threads (ActivationStep's ``parallel_rows``) against whole."""
    z = (np.random.default_rng(0).standard_normal((4096, 64)) * 20).astype(dtype)
    g = np.random.default_rng(1).standard_normal(z.shape).astype(dtype)
    results = []
    before = manual_bp.get_num_threads()
    try:
        for threads in (1, 2):
            manual_bp.set_num_threads(threads)
            step = ActivationLayer("sigmoid").fast_step()
            a = step.forward(z).copy()
            results.append((a, step.backward(g.copy(), {}, True).copy(), step.rows_split))
    finally:
        manual_bp.set_num_threads(before)
    (a1, d1, split1), (a2, d2, split2) = results
    assert not split1 and split2  # the two-thread run did split its rows
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(d1, d2)
