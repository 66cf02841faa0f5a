"""The sequence model's fused training step: Embedding → LSTM → Dense on (N, T, D) → softmax
+ log-likelihood at every position (``EMB.lookup``, ``LSTM.step``, ``FWD.dense``,
``LAYER.dense``, ``SHORTCUT.softmax-log-likelihood``), against the readable path and torch
in float64; each fast step against its readable layer; 1 vs 2 threads; float32."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import manual_bp
from manual_bp._threads import MIN_ELEMENTS
from manual_bp.activations import get_activation
from manual_bp.gradcheck import assert_gradients_close
from manual_bp.layers.dense import Dense, DenseStep
from manual_bp.layers.embedding import Embedding, EmbeddingStep
from manual_bp.layers.steps import GenericStep
from manual_bp.models.sequential import Sequential
from manual_bp.training import FusedTrainer

seeds = st.integers(0, 2**31 - 1)


def _model(vocab, embed, hidden, length, dtype=np.float64, seed=0):
    spec = [("embedding", (vocab, embed), {}), ("lstm", (hidden,), {}), "dense", "softmax"]
    return Sequential.from_spec(
        spec, (length,), vocab, cost="log-likelihood", seed=seed, dtype=dtype
    )


def _torch_gradients(model, x, labels):
    """autograd's ∂C/∂θ of the mean log-likelihood over all N·T positions (our params)."""
    emb, lstm, dense = model.layers[:3]
    e = torch.nn.Embedding(emb.num_embeddings, emb.embedding_dim, dtype=torch.float64)
    r = torch.nn.LSTM(lstm.input_size, lstm.hidden_size, batch_first=True, dtype=torch.float64)
    d = torch.nn.Linear(dense.in_features, dense.out_features, dtype=torch.float64)
    tensors = []
    for module, layer in ((e, emb), (r, lstm), (d, dense)):
        for name, array in layer.params.items():
            t = torch.tensor(array, requires_grad=True)
            setattr(module, name, torch.nn.Parameter(t))
            tensors.append(getattr(module, name))
    logits = d(r(e(torch.tensor(x, dtype=torch.long)))[0])
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), torch.tensor(labels.reshape(-1))
    )
    loss.backward()
    return [t.grad.numpy() for t in tensors]


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 5),
    length=st.integers(1, 6),
    vocab=st.integers(2, 9),
    embed=st.integers(1, 5),
    hidden=st.integers(1, 6),
    seed=seeds,
)
def test_sequence_model_fused_gradients_match_readable_and_torch(
    batch, length, vocab, embed, hidden, seed
):
    """The fused step (seed δ = a − onehot scaled by 1/(N·T), then each layer's fast step)
    equals the readable training step and torch's cross-entropy averaged over N·T."""
    rng = np.random.default_rng(seed)
    model = _model(vocab, embed, hidden, length, seed=seed % 1000)
    tokens = rng.integers(0, vocab, (batch, length))
    labels = rng.integers(0, vocab, (batch, length))
    x = model.prepare_inputs(tokens.astype(np.float64))
    y = model.prepare_targets(labels, batch)
    fused = FusedTrainer(model).gradients(tokens.astype(np.float64), labels)
    _, readable = model.loss_and_gradients(x, y)
    reference = _torch_gradients(model, tokens, labels)
    assert len(fused) == len(readable) == len(reference)
    for k, (a, b, c) in enumerate(zip(fused, readable, reference, strict=True)):
        assert_gradients_close(a, b, name=f"fused vs readable θ[{k}]")
        assert_gradients_close(a, c, name=f"fused vs torch θ[{k}]")


def test_sequence_model_float32_and_thread_count_independent():
    """A float32 lstm model's fused gradients are float32 and the same bits on 1 and 2
    threads; its steps are the fused ones (no readable fallback on the training path)."""
    rng = np.random.default_rng(7)
    model = _model(50, 8, 16, 9, dtype=np.float32, seed=3)
    tokens = rng.integers(0, 50, (6, 9)).astype(np.float32)
    labels = rng.integers(0, 50, (6, 9))
    before = manual_bp.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            manual_bp.set_num_threads(threads)
            trainer = FusedTrainer(model)
            results.append(trainer.gradients(tokens, labels))
    finally:
        manual_bp.set_num_threads(before)
    assert not any(isinstance(s, GenericStep) for s in trainer.steps)
    for a, b in zip(*results, strict=True):
        assert a.dtype == np.float32 and np.array_equal(a, b)


def test_large_output_seed_split_over_rows_matches_readable_and_threads():
    """From 2·MIN_ELEMENTS output elements the seed δ = (a − onehot)/(N·T) runs as one work
    call over row slices (``parallel_rows``): the readable path's gradients (float64) and the
    same bits on 1 and 2 threads."""
    rng = np.random.default_rng(8)
    vocab, length, batch = 1000, 12, 12  # 144 rows × 1000 classes ≥ 2·MIN_ELEMENTS
    assert batch * length * vocab >= 2 * MIN_ELEMENTS
    model = _model(vocab, 4, 6, length, seed=5)
    tokens = rng.integers(0, vocab, (batch, length)).astype(np.float64)
    labels = rng.integers(0, vocab, (batch, length))
    x = model.prepare_inputs(tokens)
    y = model.prepare_targets(labels, batch)
    _, readable = model.loss_and_gradients(x, y)
    before = manual_bp.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            manual_bp.set_num_threads(threads)
            results.append(FusedTrainer(model).gradients(tokens, labels))
    finally:
        manual_bp.set_num_threads(before)
    for k, (a, b, c) in enumerate(zip(*results, readable, strict=True)):
        assert np.array_equal(a, b)
        assert_gradients_close(a, c, name=f"fused vs readable θ[{k}]")


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 4),
    length=st.integers(1, 5),
    n_in=st.integers(1, 6),
    n_out=st.integers(1, 6),
    bias=st.booleans(),
    seed=seeds,
)
def test_dense_step_on_sequences_matches_readable_and_torch(batch, length, n_in, n_out, bias, seed):
    """FWD.dense, LAYER.dense on (N, T, D): DenseStep's 2-D GEMMs on (N·T, D) views equal the
    readable layer and torch.nn.Linear (random upstream gradient)."""
    rng = np.random.default_rng(seed)
    layer = Dense(n_in, n_out, bias=bias, seed=rng)
    x = rng.standard_normal((batch, length, n_in))
    dz = rng.standard_normal((batch, length, n_out))
    step = DenseStep(layer)
    grads = {name: np.full_like(p, np.nan) for name, p in layer.params.items()}
    z = step.forward(x).copy()
    dx = step.backward(dz.copy(), grads, True).copy()
    z_r, cache = layer.forward(x)
    dx_r, grads_r = layer.backward(dz, cache)
    module = torch.nn.Linear(n_in, n_out, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(layer.W))
        if bias:
            module.bias.copy_(torch.tensor(layer.b))
    xt = torch.tensor(x, requires_grad=True)
    zt = module(xt)
    zt.backward(torch.tensor(dz))
    assert_gradients_close(z, z_r, name="DenseStep z vs readable")
    assert_gradients_close(z, zt.detach().numpy(), name="DenseStep z vs torch")
    assert_gradients_close(dx, dx_r, name="DenseStep ∂C/∂x vs readable")
    assert_gradients_close(dx, xt.grad.numpy(), name="DenseStep ∂C/∂x vs torch")
    assert_gradients_close(grads["weight"], module.weight.grad.numpy(), name="DenseStep ∂C/∂W")
    assert_gradients_close(grads["weight"], grads_r["weight"], name="DenseStep ∂C/∂W readable")
    if bias:
        assert_gradients_close(grads["bias"], module.bias.grad.numpy(), name="DenseStep ∂C/∂b")
    assert step.forward(x) is step.z  # the buffer it owns, reshaped views of it for the GEMMs
    assert np.shares_memory(step.z2, step.z) and np.shares_memory(step.dx2, step.dx)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    padding=st.booleans(),
    seed=seeds,
)
def test_embedding_step_matches_readable_and_torch(shape, padding, seed):
    """EMB.lookup: EmbeddingStep's gather and sort-based scatter-add (repeated indices,
    padding row) equal the readable layer and torch.nn.Embedding's gradient."""
    rng = np.random.default_rng(seed)
    vocab = int(rng.integers(1, 6))
    padding_idx = int(rng.integers(0, vocab)) if padding else None
    layer = Embedding(vocab, 3, padding_idx, seed=rng)
    x = rng.integers(0, vocab, (2, *shape))
    d_out = rng.standard_normal((*x.shape, 3))
    step = layer.fast_step()
    assert isinstance(step, EmbeddingStep)
    grads = {"weight": np.full_like(layer.params["weight"], np.nan)}
    out = step.forward(x.astype(np.float64)).copy()
    dx = step.backward(d_out.copy(), grads, True)
    out_r, cache = layer.forward(x)
    dx_r, grads_r = layer.backward(d_out, cache)
    module = torch.nn.Embedding(vocab, 3, padding_idx, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(layer.params["weight"]))
    module(torch.tensor(x)).backward(torch.tensor(d_out))
    assert np.array_equal(out, out_r) and np.array_equal(dx, dx_r)
    assert_gradients_close(grads["weight"], grads_r["weight"], name="EmbeddingStep readable")
    assert_gradients_close(grads["weight"], module.weight.grad.numpy(), name="EmbeddingStep")
    assert step.backward(d_out, grads, False) is None


def test_softmax_forward_into_is_forward_bit_for_bit():
    """ACT.softmax: the in-place fast forward performs the readable forward's operations."""
    rng = np.random.default_rng(0)
    softmax = get_activation("softmax")
    for dtype in (np.float64, np.float32):
        z = (30 * rng.standard_normal((4, 7, 13))).astype(dtype)
        out = np.empty_like(z)
        assert softmax.forward_into(z, out) is out
        assert out.dtype == dtype and np.array_equal(out, softmax.forward(z))


def test_softmax_forward_into_same_bits_on_one_and_two_threads():
    """ACT.softmax over rows split between threads: the same bits as one call."""
    rng = np.random.default_rng(1)
    softmax = get_activation("softmax")
    z = (10 * rng.standard_normal((6, 50, 1000))).astype(np.float32)  # 300 rows of 1000
    before = manual_bp.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            manual_bp.set_num_threads(threads)
            results.append(softmax.forward_into(z, np.empty_like(z)).copy())
    finally:
        manual_bp.set_num_threads(before)
    assert np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], softmax.forward(z))
