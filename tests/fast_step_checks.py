"""Shared checks for a layer's fast step against its readable form (helper of the
``tests/test_fast_*`` files of the layers issue 25 gave fast forms).

* :func:`run_step`: one step's forward and backward, copied out of the step's buffers
  (:func:`run_fast`: the same from a fresh ``layer.fast_step()``);
* :func:`across_threads` and :func:`assert_same_bits`: a run with 1 and 2 threads (the
  count restored after), compared bit for bit;
* :func:`check_against_readable`: the step against the layer's own forward/backward on a
  sequence of batches (buffer reuse, an odd last mini-batch), within the conventions'
  bound ``c·ε·max(max|ref|, S)`` (docs/conventions.md "Precision and tolerances") where
  ``S`` is the readable computation run on absolute values (parameters, input and upstream
  gradient), the a-priori rounding bound of its sums; ``exact=True`` asks for the same bits;
* :func:`check_training`: ``train()`` fast and ``train(fast=False)`` from the same model
  give the same parameters (to the same bound, scaled by the parameters' size).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

import manual_bp
from manual_bp.gradcheck.compare import assert_gradients_close


def run_step(step: Any, x: np.ndarray, dout: np.ndarray, need_dx: bool = True):
    """``(out, dx, grads)`` as copies; the gradient views start as NaN (all must be written)."""
    out = step.forward(x).copy()
    grads = {k: np.full_like(v, np.nan) for k, v in step_layer(step).params.items()}
    dx = step.backward(dout.copy(), grads, need_dx)
    return out, (None if dx is None else dx.copy()), grads


def run_fast(layer: Any, x: np.ndarray, dout: np.ndarray, need_dx: bool = True):
    """:func:`run_step` of a fresh ``layer.fast_step()``."""
    return run_step(layer.fast_step(), x, dout, need_dx)


@contextmanager
def thread_count(count: int) -> Iterator[None]:
    """``manual_bp``'s thread count set to ``count`` in the block, restored after."""
    before = manual_bp.get_num_threads()
    manual_bp.set_num_threads(count)
    try:
        yield
    finally:
        manual_bp.set_num_threads(before)


def across_threads(run: Callable[[], Any], counts: tuple[int, ...] = (1, 2)) -> list[Any]:
    """``run()`` once with each thread count of ``counts``."""
    results = []
    for count in counts:
        with thread_count(count):
            results.append(run())
    return results


def assert_same_bits(first: Any, second: Any, label: Any = None) -> None:
    """Two ``(out, dx, grads)`` results equal bit for bit (a NaN anywhere fails)."""
    (out1, dx1, g1), (out2, dx2, g2) = first, second
    assert np.array_equal(out1, out2), label
    assert (dx1 is None and dx2 is None) or np.array_equal(dx1, dx2), label
    assert g1.keys() == g2.keys(), label
    for name in g1:
        assert np.array_equal(g1[name], g2[name]), (label, name)


def step_layer(step: Any) -> Any:
    return getattr(step, "transposed", None) or step.layer


def _readable(layer: Any, x: np.ndarray, dout: np.ndarray):
    out, cache = layer.forward(x)
    dx, grads = layer.backward(dout, cache)
    return out, dx, grads


def _magnitudes(layer: Any, x: np.ndarray, dout: np.ndarray):
    """The readable computation on absolute values: ``S`` of every result."""
    mirror = copy.deepcopy(layer)
    for value in mirror.params.values():
        np.abs(value, out=value)
    return _readable(mirror, np.abs(x), np.abs(dout))


def check_against_readable(
    layer: Any,
    make_input: Any,
    batches: tuple[int, ...],
    rng: np.random.Generator,
    *,
    exact: bool = False,
    magnitudes: Any = _magnitudes,
) -> Any:
    """The fast step of ``layer`` against its readable forward/backward on one batch per
    entry of ``batches`` (``make_input(n)`` draws one), with and without ∂C/∂x; returns the
    step. ``magnitudes(layer, x, dout)`` gives ``S`` for (out, dx, grads)."""
    step = layer.fast_step()
    for n in batches:
        x = make_input(n)
        dtype = x.dtype
        before = copy.deepcopy(layer)  # its state (running statistics, a generator) now
        out = step.forward(x).copy()
        dout = rng.standard_normal(out.shape).astype(out.dtype)
        grads = {k: np.full_like(v, np.nan) for k, v in layer.params.items()}
        dx = step.backward(dout.copy(), grads, True).copy()
        reference = copy.deepcopy(before)
        ref_out, ref_dx, ref_grads = _readable(reference, x, dout)
        assert out.dtype == dx.dtype == x.dtype
        assert grads.keys() == ref_grads.keys()
        for name, value in reference.buffers.items():  # running statistics updated alike
            np.testing.assert_allclose(layer.buffers[name], value, rtol=1e-12, err_msg=name)
        if hasattr(layer, "get_extra_state"):  # a generator (RReLU's) advanced alike
            assert repr(layer.get_extra_state()) == repr(reference.get_extra_state())
        if exact:
            np.testing.assert_array_equal(out, ref_out)
            np.testing.assert_array_equal(dx, ref_dx)
            for name in grads:
                np.testing.assert_array_equal(grads[name], ref_grads[name], err_msg=name)
        else:
            s_out, s_dx, s_grads = magnitudes(copy.deepcopy(before), x, dout)
            assert_gradients_close(out, ref_out, name="out", dtype=dtype, scale=s_out)
            assert_gradients_close(dx, ref_dx, name="dx", dtype=dtype, scale=s_dx)
            for name in grads:
                assert grads[name].dtype == dtype
                assert_gradients_close(
                    grads[name], ref_grads[name], name=name, dtype=dtype, scale=s_grads[name]
                )
        # the lowest layer (a fresh step from the same state): the same parameter
        # gradients, no ∂C/∂x
        twin = copy.deepcopy(before)
        twin_step = twin.fast_step()
        twin_step.forward(x)
        only = {k: np.full_like(v, np.nan) for k, v in twin.params.items()}
        assert twin_step.backward(dout.copy(), only, False) is None
        for name in grads:
            np.testing.assert_array_equal(only[name], grads[name], err_msg=name)
    return step


def check_training(
    spec: list,
    input_shape: tuple[int, ...],
    n_outputs: int,
    n: int,
    batch_size: int,
    dtype: str = "float64",
    seed: int = 0,
) -> None:
    """``train()`` through the fast steps and ``train(fast=False)`` from the same model
    (``n`` samples, batches of ``batch_size``: an odd last one when it does not divide)."""
    from manual_bp.models.sequential import Sequential
    from manual_bp.training import train

    models = [
        Sequential.from_spec(spec, input_shape, n_outputs, cost="log-likelihood", seed=seed,
                             dtype=dtype)
        for _ in range(2)
    ]  # fmt: skip
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *input_shape)).astype(dtype)
    y = rng.integers(0, n_outputs, n)
    for model, fast in zip(models, (True, False), strict=True):
        train(model, x, y, epochs=2, batch_size=batch_size, eta=0.05, monitor=(), seed=seed,
              fast=fast)  # fmt: skip
    fast_p, slow_p = (np.concatenate([p.ravel() for p in m.parameter_arrays()]) for m in models)
    assert fast_p.dtype == slow_p.dtype == np.dtype(dtype)
    bound = 1e4 * np.finfo(dtype).eps * max(1.0, float(np.abs(slow_p).max()))
    np.testing.assert_allclose(fast_p, slow_p, rtol=0, atol=bound)
