"""Batch and layer norm in the configurations torch's module tests add (issue 23): empty
batches (torch: an empty output, zero parameter gradients, the batch counted in
``num_batches_tracked`` but the running statistics untouched), ``momentum=None`` across such
batches, and torch's ``device=``/``dtype=`` keywords. Readable form, fused step and V-axis
products against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manual_bp.layers.normalisation import BatchNorm1d, BatchNorm2d, LayerNorm

CASES = [(BatchNorm1d, (0, 3)), (BatchNorm1d, (0, 3, 4)), (BatchNorm1d, (2, 3, 0)),
         (BatchNorm2d, (0, 3, 2, 2))]  # fmt: skip


def _torch_twin(layer, cls_name, **options):
    module = getattr(torch.nn, cls_name)(3, dtype=torch.float64, **options)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.from_numpy(layer.params[name]))
        for name, b in module.named_buffers():
            b.copy_(torch.from_numpy(np.asarray(layer.buffers[name])))
    return module


@pytest.mark.parametrize("cls, shape", CASES)
@pytest.mark.parametrize("momentum", [None, 0.3])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("fast", [False, True])
def test_an_empty_batch_matches_torch(cls, shape, momentum, training, fast):
    """LAYER.batchnorm on an empty batch, then a full one: outputs, gradients and every
    buffer as torch's after each (momentum=None averages over the counted batches)."""
    rng = np.random.default_rng(0)
    layer = cls(3, momentum=momentum)
    for array in layer.params.values():
        array[...] = rng.standard_normal(3)
    layer.buffers["running_mean"][...] = rng.standard_normal(3)
    layer.train(training)
    module = _torch_twin(layer, cls.__name__, momentum=momentum).train(training)
    full = (4, *shape[1:]) if shape[0] == 0 else (shape[0], 3, 5)
    for x_shape in (shape, full):
        x, u = rng.standard_normal(x_shape), rng.standard_normal(x_shape)
        if fast:
            step = layer.fast_step()
            grads = {name: np.full_like(p, np.nan) for name, p in layer.params.items()}
            y = step.forward(x).copy()
            dx = step.backward(u.copy(), grads, True)
        else:
            y, cache = layer.forward(x)
            dx, grads = layer.backward(u, cache)
        xt = torch.tensor(x, requires_grad=True)
        yt = module(xt)
        wrt = [xt, *module.parameters()]
        got = torch.autograd.grad(yt, wrt, torch.from_numpy(u))
        assert y.shape == x.shape and dx.shape == x.shape
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=0, atol=1e-13)
        np.testing.assert_allclose(dx, got[0].numpy(), rtol=0, atol=1e-13)
        for (name, _), ref in zip(module.named_parameters(), got[1:], strict=True):
            np.testing.assert_allclose(grads[name], ref.numpy(), rtol=0, atol=1e-13)
        for name, b in module.named_buffers():
            np.testing.assert_allclose(layer.buffers[name], b.numpy(), rtol=0, atol=1e-15)


@pytest.mark.parametrize("cls, shape", CASES)
def test_products_of_an_empty_batch(cls, shape):
    """PROD.batchnorm*.{vjp,jvp,residual}: empty where the input is, zero for parameters."""
    layer = cls(3)
    x = np.zeros(shape)
    _, cache = layer.forward(x)
    M, T = np.zeros((2, *shape)), np.zeros((2, *shape))
    assert layer.input_vjp(cache, M).shape == M.shape
    assert layer.input_jvp(cache, T).shape == T.shape
    for name, grad in layer.param_vjp(cache, M).items():
        np.testing.assert_array_equal(grad, np.zeros((2, 3)), err_msg=name)
    T_params = {name: np.ones((2, 3)) for name in layer.params}
    assert layer.param_jvp(cache, T_params).shape == T.shape
    dx, dparams = layer.residual(cache, np.zeros(shape), T, T_params)
    assert dx.shape == T.shape
    assert all(not np.any(g) for g in dparams.values())


def test_one_value_per_channel_is_still_refused():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm1d(3).forward(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm1d(3).fast_step().forward(np.zeros((1, 3, 1)))


@pytest.mark.parametrize("cls, args", [(BatchNorm1d, (3,)), (BatchNorm2d, (3,)),
                                       (LayerNorm, ((2, 3),))])  # fmt: skip
def test_device_and_dtype_keywords_as_torch(cls, args):
    assert cls(*args, dtype=torch.float32).params["weight"].dtype == np.float32
    assert cls(*args, device="cpu", dtype="float64").params["weight"].dtype == np.float64
    assert cls(*args).params["weight"].dtype == np.float64  # the library's default
    with pytest.raises(ValueError, match="device='cuda' has no meaning here"):
        cls(*args, device="cuda")
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        cls(*args, dtype=np.int32)


@pytest.mark.parametrize("shape", [(2, 3), (3,)])
def test_layernorm_takes_an_unbatched_input_as_torch(shape):
    """LAYER.layernorm on an input of ``normalized_shape`` alone: readable, fused, torch."""
    rng = np.random.default_rng(2)
    ours = LayerNorm(shape)
    theirs = torch.nn.LayerNorm(shape, dtype=torch.float64)
    for name, p in ours.params.items():
        p[...] = rng.standard_normal(p.shape)
        getattr(theirs, name).data = torch.from_numpy(p.copy())
    x, u = rng.standard_normal(shape), rng.standard_normal(shape)
    y, cache = ours.forward(x)
    dx, grads = ours.backward(u, cache)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    got = torch.autograd.grad(yt, [xt, theirs.weight, theirs.bias], torch.from_numpy(u))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(dx, got[0].numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(grads["weight"], got[1].numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(grads["bias"], got[2].numpy(), rtol=0, atol=1e-14)
    step = ours.fast_step()
    fast = {name: np.empty_like(p) for name, p in ours.params.items()}
    np.testing.assert_allclose(step.forward(x), y, rtol=0, atol=1e-15)
    np.testing.assert_allclose(step.backward(u.copy(), fast, True), dx, rtol=0, atol=1e-14)
    M = rng.standard_normal((2, *shape))
    vjp = ours.input_vjp(cache, M)
    for v in range(2):
        np.testing.assert_allclose(vjp[v], ours.backward(M[v], cache)[0], rtol=0, atol=1e-14)
