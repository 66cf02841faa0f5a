"""The GPT's fused training step (``manual_bp.models.gpt_fast``) against its readable step
and against nanoGPT's model in torch (``docs/gpt.md``, "Speed").

Float64 on hypothesis-drawn configurations (layers 1–3, heads 1–4, tied or not, bias or not,
``ignore_index`` positions): the loss and every gradient equal the readable
:meth:`GPT.backprop`'s to rounding and torch autograd's (a random upstream scalar), and the
parameters after k clipped AdamW steps (``NanoGPTStep``: flat clipping + ``step_flat``) equal
the readable per-array iteration's. Float32 against the float64 oracle with the tolerance
stated below (measured).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.models.gpt import GPT, GPTConfig
from manual_bp.models.gpt_fast import GPTFastStep
from manual_bp.training.gpt_train import GroupedAdamW, NanoGPTStep, configure_optimizers
from reference.checks_transformer import plain_layer_norm
from reference.gpt import randomised, torch_gpt_like

#: float64, fast vs readable and vs torch: |Δ| ≤ F64_TOL · scale per array (the scale:
#: :func:`assert_arrays_close`); measured ≤ 5.6e-14 over 40 drawn cases
F64_TOL = 1e-12
#: float32 fast step vs the float64 readable step of the same (rounded) parameters: measured
#: 2.9e-5 at worst over 40 drawn cases — the readable float32 step reaches 2.5e-5 on the same
#: cases (2⁻²⁴ ≈ 6e-8 per rounding, grown by LayerNorm's 1/σ on widths of 1–16 and O(0.3)
#: weights); the loss within F32_TOL · max(1, C)
F32_TOL = 1e-4


@st.composite
def fast_cases(draw):
    n_head = draw(st.integers(1, 4))
    config = GPTConfig(
        vocab_size=draw(st.integers(2, 17)),
        block_size=draw(st.integers(1, 8)),
        n_layer=draw(st.integers(1, 3)),
        n_head=n_head,
        n_embd=n_head * draw(st.integers(1, 4)),
        bias=draw(st.booleans()),
        tie_weights=draw(st.booleans()),
    )
    seed = draw(st.integers(0, 2**31))
    T = draw(st.integers(1, config.block_size))
    B = draw(st.integers(1, 3))
    return config, seed, B, T


def make(config: GPTConfig, seed: int, dtype=np.float64, fast: bool = False) -> GPT:
    model = randomised(GPT(config, seed=seed, dtype=dtype), np.random.default_rng(seed + 1))
    model.fast_training = fast
    return model


def batch(config: GPTConfig, seed: int, B: int, T: int):
    rng = np.random.default_rng(seed + 2)
    idx = rng.integers(0, config.vocab_size, (B, T))
    targets = rng.integers(0, config.vocab_size, (B, T))
    targets[rng.random((B, T)) < 0.25] = -1  # ignore_index positions
    targets[0, 0] = rng.integers(0, config.vocab_size)  # one counted at least
    return idx, targets


def assert_arrays_close(
    actual, expected, tol: float, what: str, loss: float = 0.0, sensitivity=None
) -> None:
    """``|Δ| ≤ tol · max(max|e_i|, 10⁻³ · max(max_j max|e_j|, C), s_i)`` per array: a
    gradient that cancels to ~0 carries the rounding of the terms it sums, whose size the
    step's largest gradient or the loss ``C`` bound, or — where rounding inside is grown
    more (a LayerNorm over two features, whose input gradient cancels to O(ε_LN/d²)) — the
    array's measured sensitivity ``s_i`` (:func:`shaken_sensitivity`)."""
    floor = 1e-3 * max(abs(loss), *(float(np.abs(e).max(initial=0.0)) for e in expected))
    sensitivity = [0.0] * len(expected) if sensitivity is None else sensitivity
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        bound = tol * max(float(np.abs(e).max(initial=0.0)), floor, sensitivity[i], 1e-300)
        err = float(np.abs(np.asarray(a, np.float64) - e).max(initial=0.0))
        assert err <= bound, f"{what}[{i}] {e.shape}: |Δ| {err:.3g} > {bound:.3g}"


#: the relative size of the shake (:func:`shaken_sensitivity`), as the transformer checks'
DELTA = 2.0**-26


def torch_twin_gradients(readable: GPT, idx, targets, upstream: float, shake=None):
    """``(loss, gradients)`` of torch's twin of ``readable`` in its parameter order; with
    ``shake`` (a NumPy generator), every submodule's output multiplied by ``1 ± δ`` (random
    signs): the rounding a module's output carries, passed on as the model passes it on.

    One feature: ``x̂ ≡ 0``, so ``∂C/∂w`` of every LayerNorm and every gradient below one are
    rounding alone — ours exactly 0 (``x − μ`` is 0), torch's fused kernel's
    ``x·rstd − μ·rstd`` an ε grown by ``rstd = 1/√ε_LN ≈ 316`` (a drawn case: |Δ| 1.1e-15 on
    a 7.4e-16 bound): there the twin's LayerNorms run in plain ops (the same function),
    which compute ``x − μ`` as we do."""
    twin = torch_gpt_like(readable)
    if readable.config.n_embd == 1:
        for module in twin.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.forward = plain_layer_norm(module)
    if shake is not None:

        def jitter(module, args, out):
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                signs = shake.choice([-1.0, 1.0], size=tuple(out.shape))
                return out * torch.from_numpy(1.0 + DELTA * signs)
            return None

        for name, module in twin.named_modules():
            if name:  # every submodule; the model's own (logits, loss) pair is not one
                module.register_forward_hook(jitter)
    _, loss = twin(torch.tensor(idx), torch.tensor(targets))
    (loss * upstream).backward()
    grads = dict(twin.named_parameters())
    return loss.item(), [grads[n].grad.numpy() / upstream for n, _ in readable.named_parameters()]


def shaken_sensitivity(readable: GPT, idx, targets, upstream: float, expected) -> list[float]:
    """Per array, ``max |g(shaken) − g| / δ``: how far rounding of the size of every module's
    output moves that gradient (the repository's probe of conditioning, as in
    ``reference/checks_transformer.py``), so that ``tol ·`` it bounds rounding alone."""
    _, shaken = torch_twin_gradients(readable, idx, targets, upstream, np.random.default_rng(0))
    return [
        float(np.abs(s - e).max(initial=0.0)) / DELTA for s, e in zip(shaken, expected, strict=True)
    ]


@settings(max_examples=15, deadline=None)
@given(fast_cases())
def test_fast_step_equals_the_readable_step_and_torch_in_float64(case):
    """GPT.block, GPT.qkv, GPT.causal, GPT.tied, GPT.lm-ce through the fast forms: loss
    and every gradient equal the readable step's and torch's (random upstream scalar)."""
    config, seed, B, T = case
    readable, fast = make(config, seed), make(config, seed, fast=True)
    idx, targets = batch(config, seed, B, T)
    loss_r, grads_r = readable.loss_and_gradients(idx, targets)
    loss_f, grads_f = fast.loss_and_gradients(idx, targets)
    assert abs(loss_f - loss_r) <= F64_TOL * max(1.0, abs(loss_r))
    assert_arrays_close(grads_f, grads_r, F64_TOL, "fast vs readable", loss_r)
    assert all(g.base is not None for g in grads_f) and grads_f.flat.size == fast.n_parameters

    upstream = float(np.random.default_rng(seed).uniform(0.5, 2.0))  # not 1: a random seed
    loss_t, expected = torch_twin_gradients(readable, idx, targets, upstream)
    assert abs(loss_f - loss_t) <= F64_TOL * max(1.0, abs(loss_t))
    sensitivity = shaken_sensitivity(readable, idx, targets, upstream, expected)
    assert_arrays_close(grads_f, expected, F64_TOL, "fast vs torch", loss_r, sensitivity)


@settings(max_examples=15, deadline=None)
@given(fast_cases(), st.sampled_from([1e-3, 0.5, 1e6, None]), st.integers(1, 3))
def test_fast_training_equals_readable_after_k_clipped_adamw_steps(case, grad_clip, k):
    """NanoGPTStep on the fast step's flat gradients (GPT.clip over every array, both
    groups; OPT.adamw over flat buffers in blocks) = the readable per-array iteration."""
    config, seed, B, T = case
    models = [make(config, seed, fast=fast) for fast in (False, True)]
    steps = [NanoGPTStep(configure_optimizers(m, 0.1, 1e-2), grad_clip) for m in models]
    idx, targets = batch(config, seed, B, T)
    for _ in range(k):
        for model, step in zip(models, steps, strict=True):
            _, grads = model.loss_and_gradients(idx, targets)
            step.step(model.parameter_arrays(), grads)
    assert steps[1].optimizer._flat is not None  # the flat path ran
    # Adam divides by |g| + ε: a gradient that cancels to ~0 moves its update by up to
    # η·δg/ε for a rounding δg of it (≤ F64_TOL times the step's scale, the gradient tests'
    # bound); a wrong group, decay or clip moves it by O(η) = 1e-2, far above
    lr, scale = 1e-2, max(1.0, *(float(np.abs(g).max()) for g in grads))
    adam = k * lr * min(2.0, F64_TOL * scale / 1e-8)
    for i, (f, r) in enumerate(zip(*(m.parameter_arrays() for m in models), strict=True)):
        err = float(np.abs(f - r).max())
        assert err <= F64_TOL * float(np.abs(r).max()) + adam, f"parameter {i}: {err:.3g}"


@settings(max_examples=15, deadline=None)
@given(fast_cases(), st.sampled_from([1e-3, 0.5, 1e6, None]), st.integers(1, 3))
def test_flat_clip_and_adamw_are_the_per_array_ones_bit_for_bit(case, grad_clip, k):
    """The same gradients through NanoGPTStep's flat path (one clipping factor over every
    array of both groups, folded into step_flat's blocks) and its per-array path: the same
    operations in the same order per element, so the same bits, k steps on."""
    config, seed, B, T = case
    fast, readable = make(config, seed, fast=True), make(config, seed)
    steps = [NanoGPTStep(configure_optimizers(m, 0.1, 1e-2), grad_clip) for m in (fast, readable)]
    idx, targets = batch(config, seed, B, T)
    for _ in range(k):
        _, grads = fast.loss_and_gradients(idx, targets)
        copies = [g.copy() for g in grads]  # the per-array path's own arrays
        steps[0].step(fast.parameter_arrays(), grads)
        steps[1].step(readable.parameter_arrays(), copies)
        np.testing.assert_array_equal(grads.flat, np.concatenate([g.ravel() for g in copies]))
    np.testing.assert_array_equal(fast.flat_parameters, readable.flat_parameters)


@pytest.mark.parametrize("factor", [1 - 1e-3, 1.0, 1 + 1e-3])
def test_clipping_on_both_sides_of_and_at_the_bound(factor):
    """GPT.clip in the flat path: a bound just below, at (norm + 10⁻⁶: the factor exactly
    1) and just above the gradient norm: the gradients scaled by min(1, bound/(norm + 10⁻⁶))
    (untouched from the bound on), and the per-array path's parameters bit for bit."""
    from manual_bp.training.clip import grad_norm

    config = GPTConfig(11, 6, 2, 2, 8)
    idx, targets = batch(config, 4, 2, 6)
    fast, readable = make(config, 4, fast=True), make(config, 4)
    _, grads = fast.loss_and_gradients(idx, targets)
    norm = grad_norm(grads)
    bound = (norm + 1e-6) * factor
    before, copies = grads.flat.copy(), [g.copy() for g in grads]
    NanoGPTStep(configure_optimizers(fast, 0.1, 1e-2), bound).step(fast.parameter_arrays(), grads)
    step = NanoGPTStep(configure_optimizers(readable, 0.1, 1e-2), bound)
    step.step(readable.parameter_arrays(), copies)
    expected = before * (bound / (norm + 1e-6)) if factor < 1 else before
    np.testing.assert_array_equal(grads.flat, expected)
    np.testing.assert_array_equal(fast.flat_parameters, readable.flat_parameters)


@settings(max_examples=8, deadline=None)
@given(fast_cases())
def test_float32_fast_step_within_the_stated_tolerance(case):
    """float32 fast step (no float64 temporary but the B·T loss terms) against the
    float64 readable step of the same parameters: ``F32_TOL`` (measured)."""
    config, seed, B, T = case
    oracle, fast = make(config, seed), make(config, seed, np.float32, fast=True)
    fast.flat_parameters[...] = oracle.flat_parameters  # the same (rounded) weights
    oracle.flat_parameters[...] = fast.flat_parameters
    idx, targets = batch(config, seed, B, T)
    loss_o, grads_o = oracle.loss_and_gradients(idx, targets)
    loss_f, grads_f = fast.loss_and_gradients(idx, targets)
    assert all(g.dtype == np.float32 for g in grads_f)
    assert abs(loss_f - loss_o) <= F32_TOL * max(1.0, abs(loss_o))
    assert_arrays_close(grads_f, grads_o, F32_TOL, "float32 fast vs float64", loss_o)


def test_tied_gradient_is_one_slot_holding_both_uses():
    """GPT.tied in the fast step: ``wte``'s one slot holds the head's and the embedding's
    gradients (the untied twin's sum); an untied model's head has its own slot."""
    config = GPTConfig(13, 6, 2, 2, 8)
    tied = make(config, 3, fast=True)
    untied = GPT(GPTConfig(13, 6, 2, 2, 8, tie_weights=False), seed=0)
    untied.load_state_dict(tied.state_dict())
    untied.fast_training = True
    idx, targets = batch(config, 3, 2, 6)
    g_tied = dict(zip(tied._parameter_names, tied.loss_and_gradients(idx, targets)[1],
                      strict=True))  # fmt: skip
    g_untied = dict(zip(untied._parameter_names, untied.loss_and_gradients(idx, targets)[1],
                        strict=True))  # fmt: skip
    both = g_untied["transformer.wte.weight"] + g_untied["lm_head.weight"]
    np.testing.assert_allclose(g_tied["transformer.wte.weight"], both, rtol=0, atol=1e-14)
    assert "lm_head.weight" not in g_tied


def test_steps_reuse_their_buffers_and_batch_shapes_alternate():
    """Two batch shapes alternate (the last mini-batch smaller): each keeps its buffers
    and its results equal the readable step's."""
    config = GPTConfig(9, 8, 2, 2, 4)
    readable, fast = make(config, 6), make(config, 6, fast=True)
    for B, T in ((3, 8), (1, 5), (3, 8)):
        idx, targets = batch(config, B + T, B, T)
        loss_r, grads_r = readable.loss_and_gradients(idx, targets)
        loss_f, grads_f = fast.loss_and_gradients(idx, targets)
        assert abs(loss_f - loss_r) <= F64_TOL * max(1.0, loss_r)
        assert_arrays_close(grads_f, grads_r, F64_TOL, f"B={B} T={T}", loss_r)


def test_fast_step_refuses_dropout_in_one_line():
    model = GPT(GPTConfig(5, 4, 1, 1, 2, dropout=0.1), seed=0)
    with pytest.raises(ValueError, match=r"^GPT: the fast step does not fuse dropout \(0\.1\)"):
        GPTFastStep(model)


def test_step_flat_refuses_the_per_array_state_in_one_line():
    """Per-array moments and flat moments are not mixed: one line names reset()."""
    config = GPTConfig(5, 4, 1, 1, 2)
    model = make(config, 0)
    opt = configure_optimizers(model)
    idx, targets = batch(config, 0, 1, 4)
    opt.step(model.parameter_arrays(), model.loss_and_gradients(idx, targets)[1])
    model.fast_training = True
    grads = model.loss_and_gradients(idx, targets)[1]
    with pytest.raises(ValueError, match=r"^GroupedAdamW: state from per-array steps; reset"):
        opt.step_flat(model.parameter_arrays(), grads)
    assert isinstance(opt, GroupedAdamW)
    assert not opt.step_flat(model.parameter_arrays()[::-1], list(grads))  # not flat: False


def test_train_runs_the_fused_step_and_equals_the_readable_loop():
    """``train(gpt, ...)`` (default ``fast``) runs the fused step (``GPT.fast_training`` on
    during training, restored after) and equals ``train(..., fast=False)`` over the same
    mini-batches: the epoch's losses and the parameters (Adam's η·δg/ε bound as above)."""
    from manual_bp.training import train

    config = GPTConfig(7, 6, 2, 2, 4)
    fast, readable = make(config, 2), make(config, 2)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 7, (10, 6))
    y = np.roll(x, -1, axis=1)
    seen: list[bool] = []
    spy = fast.loss_and_gradients

    def watched(*args):
        seen.append(fast.fast_training)
        return spy(*args)

    fast.loss_and_gradients = watched
    histories = [
        train(model, x, y, epochs=2, batch_size=4, seed=3, fast=flag,
              optimizer=NanoGPTStep(configure_optimizers(model, 0.1, 1e-2), 0.5))
        for model, flag in ((fast, None), (readable, False))
    ]  # fmt: skip
    assert seen == [True] * 6 and not fast.fast_training
    for a, b in zip(*(h.training_cost for h in histories), strict=True):
        assert abs(a - b) <= F64_TOL * max(1.0, b)
    adam = 3 * 2 * 1e-2 * min(2.0, F64_TOL * 10 / 1e-8)
    assert np.abs(fast.flat_parameters - readable.flat_parameters).max() <= adam
