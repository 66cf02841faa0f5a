"""GPT-2 from the library's layers against nanoGPT's model in torch (``docs/gpt.md``).

Float64, random parameters (larger than GPT-2's 0.02 so every path carries weight), random
targets with ``ignore_index`` positions: loss, logits and every parameter gradient
(``GPT.block``, ``GPT.qkv``, ``GPT.causal``, ``GPT.tied``, ``GPT.lm-ce``); AdamW steps with
clipping and the warm-up + cosine rate (``GPT.clip``, ``GPT.warmup-cosine``); float32 with
its stated tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.models.gpt import GPT, GPTConfig, cross_entropy_fused
from manual_bp.schedules_warmup import WarmupCosineLR, warmup_cosine_lr
from manual_bp.training.clip import clip_grad_norm_
from manual_bp.training.gpt_train import configure_optimizers, train_step
from reference.gpt import from_torch_state_dict, gpt_comparisons, randomised, torch_gpt_like

#: float32 against the float64 oracle: |Δ| ≤ F32_TOL · max|oracle| over the step (measured
#: 3.4e-7 at worst on the two configurations below; 2⁻²⁴ ≈ 6e-8 per rounding, grown by depth).
F32_TOL = 1e-5


@st.composite
def gpt_cases(draw):
    n_head = draw(st.integers(1, 4))
    config = GPTConfig(
        vocab_size=draw(st.integers(2, 17)),
        block_size=draw(st.integers(1, 8)),
        n_layer=draw(st.integers(1, 3)),
        n_head=n_head,
        n_embd=n_head * draw(st.integers(1, 4)),
        dropout=draw(st.sampled_from([0.0, 0.1])),  # in evaluation: the identity
        bias=draw(st.booleans()),
        tie_weights=draw(st.booleans()),
    )
    seed = draw(st.integers(0, 2**31))
    T = draw(st.integers(1, config.block_size))
    B = draw(st.integers(1, 3))
    return config, seed, B, T


def random_model(config: GPTConfig, seed: int, dtype=np.float64) -> GPT:
    """GPT-2's initialisation, then every parameter moved to O(0.3) (LayerNorm gains ~1)."""
    return randomised(GPT(config, seed=seed, dtype=dtype), np.random.default_rng(seed + 1))


def random_batch(config: GPTConfig, seed: int, B: int, T: int):
    rng = np.random.default_rng(seed + 2)
    idx = rng.integers(0, config.vocab_size, (B, T))
    targets = rng.integers(0, config.vocab_size, (B, T))
    targets[rng.random((B, T)) < 0.25] = -1  # ignore_index positions
    targets[0, 0] = rng.integers(0, config.vocab_size)  # at least one position counted
    return idx, targets


@settings(max_examples=15, deadline=None)
@given(gpt_cases())
def test_gpt_matches_torch_in_float64(case):
    """GPT.block, GPT.qkv (and every other ID's quantities): loss, logits, all gradients."""
    config, seed, B, T = case
    model = random_model(config, seed)
    comparisons = gpt_comparisons(model, *random_batch(config, seed, B, T))
    names = {c.name for c in comparisons}
    assert {f"∂C/∂{n}" for n, _ in model.named_parameters()} <= names
    for comparison in comparisons:
        comparison.check()


def test_tied_gradient_is_the_sum_of_both_uses():
    """GPT.tied: the tied gradient equals an untied twin's wte + lm_head gradients, and
    the parameter is stored once."""
    config = GPTConfig(13, 6, 2, 2, 8)
    tied = random_model(config, 3)
    untied = GPT(GPTConfig(13, 6, 2, 2, 8, tie_weights=False), seed=0).eval()
    state = tied.state_dict()
    untied.load_state_dict(state)
    idx, targets = random_batch(config, 3, 2, 6)
    g_tied = tied.backprop(idx, targets).params
    g_untied = untied.backprop(idx, targets).params
    both = g_untied["transformer.wte.weight"] + g_untied["lm_head.weight"]
    np.testing.assert_allclose(g_tied["transformer.wte.weight"], both, rtol=0, atol=1e-15)
    assert "lm_head.weight" not in dict(tied.named_parameters())
    assert tied.n_parameters == untied.n_parameters - 13 * 8
    gpt_comparisons(tied, idx, targets)[0].check()  # and torch's shared tensor agrees


def test_causal_attention_ignores_the_future():
    """GPT.causal: logits at positions ≤ t do not move when later tokens change, and the
    loss at position t has an exactly zero gradient for the position rows after t."""
    config = GPTConfig(11, 7, 2, 2, 6)
    model = random_model(config, 5)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 11, (2, 7))
    for t in range(7):
        changed = idx.copy()
        changed[:, t + 1 :] = rng.integers(0, 11, changed[:, t + 1 :].shape)
        np.testing.assert_array_equal(model(idx)[:, : t + 1], model(changed)[:, : t + 1])
        targets = np.full_like(idx, -1)
        targets[:, t] = 3
        wpe = model.backprop(idx, targets).params["transformer.wpe.weight"]
        assert not wpe[t + 1 :].any() and wpe[: t + 1].any()


@pytest.mark.parametrize("shift", [0.0, 1e3])
def test_fused_cross_entropy_matches_torch(shift):
    """GPT.lm-ce: value and ∂C/∂logits against F.cross_entropy(ignore_index=-1), in place,
    stable for large logits; every position ignored is refused."""
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (2, 5, 9)) + shift
    targets = rng.integers(-1, 9, (2, 5))
    targets[0, 0] = 4
    z = torch.tensor(logits, requires_grad=True)
    expected = F.cross_entropy(z.view(-1, 9), torch.tensor(targets).view(-1), ignore_index=-1)
    expected.backward(torch.tensor(0.7, dtype=torch.float64))
    buffer = logits.copy()
    loss, grad = cross_entropy_fused(buffer, targets)
    assert grad is buffer  # one (B·T, V) matrix: the logits became the gradient
    assert abs(loss - expected.item()) <= 64 * 2.2e-16 * max(1.0, abs(expected.item()))
    np.testing.assert_allclose(0.7 * grad, z.grad.numpy(), rtol=0, atol=64 * 2.2e-16)
    with pytest.raises(ValueError, match="every position is ignore_index"):
        cross_entropy_fused(logits.copy(), np.full((2, 5), -1))


def _library_run(model, grad_clip, batches, probe=None):
    """Our 7 iterations; ``probe = (δ, rng)`` moves θ₀ by θ₀·δ·(±1) and every step's
    gradients by ±δ·max|g| (rounding is such a perturbation, of size ε)."""
    optimizer = configure_optimizers(model, weight_decay=0.1, learning_rate=1e-2)
    schedule = WarmupCosineLR(optimizer, warmup_iters=2, lr_decay_iters=5, min_lr=1e-3)
    if probe is not None:
        delta, rng = probe
        for _, array in model.named_parameters():
            array[...] *= 1.0 + delta * rng.choice([-1.0, 1.0], array.shape)
    losses = []
    for idx, targets in batches:
        if probe is None:  # the library's own iteration
            losses.append(train_step(model, optimizer, idx, targets, grad_clip, schedule))
            continue
        loss, grads = model.loss_and_gradients(idx, targets)
        top = max(np.abs(g).max() for g in grads)
        for g in grads:
            g += delta * top * rng.choice([-1.0, 1.0], g.shape)
        if grad_clip is not None:
            clip_grad_norm_(grads, grad_clip)
        optimizer.step(model.parameter_arrays(), grads)
        schedule.step()
        losses.append(loss)
    return losses, model.state_dict()


@pytest.mark.parametrize("grad_clip", [0.05, 1e6, None])
@pytest.mark.parametrize("tie", [True, False])
def test_adamw_steps_with_clipping_and_schedule_match_torch(grad_clip, tie):
    """GPT.clip, GPT.warmup-cosine: k = 7 iterations of AdamW (decay on 2-D weights only),
    clipping (active at 0.05, inactive at 1e6, absent) and the schedule through warm-up,
    decay and the floor, against torch.optim.AdamW + clip_grad_norm_ + the same rates.
    Tolerance as docs/conventions.md's whole runs: 64ε·max(max|torch|, κ), κ the run's
    measured condition number (two probes of relative size δ = 2⁻²⁶)."""
    config = GPTConfig(13, 6, 2, 2, 8, tie_weights=tie)
    model = random_model(config, 7)
    twin = torch_gpt_like(model)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(7):
        idx, targets = rng.integers(0, 13, (2, 6)), rng.integers(-1, 13, (2, 6))
        targets[0, 0] = 1
        batches.append((idx, targets))
    delta = 2.0**-26
    probes = [_library_run(model.copy(), grad_clip, batches, (delta, np.random.default_rng(s)))
              for s in (1, 2)]  # fmt: skip
    losses, ours = _library_run(model, grad_clip, batches)
    params = dict(twin.named_parameters())
    matrices = [p for p in params.values() if p.dim() >= 2]
    vectors = [p for p in params.values() if p.dim() < 2]
    groups = [{"params": matrices, "weight_decay": 0.1}, {"params": vectors, "weight_decay": 0.0}]
    torch_opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    for it, (idx, targets) in enumerate(batches):
        for group in torch_opt.param_groups:
            group["lr"] = warmup_cosine_lr(it, 1e-2, 2, 5, 1e-3)
        torch_opt.zero_grad()
        _, torch_loss = twin(torch.as_tensor(idx), torch.as_tensor(targets))
        torch_loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(twin.parameters(), grad_clip)
        torch_opt.step()
        kappa = max(abs(p[0][it] - losses[it]) / delta for p in probes)
        assert abs(losses[it] - torch_loss.item()) <= 64 * 2.2e-16 * max(torch_loss.item(), kappa)
    for name, tensor in twin.state_dict().items():
        expected = tensor.numpy()
        kappa = np.maximum(*(np.abs(p[1][name] - ours[name]) / delta for p in probes))
        bound = 64 * 2.2e-16 * np.maximum(np.abs(expected).max(), kappa)
        assert (np.abs(ours[name] - expected) <= bound).all(), name


def test_clip_grad_norm_matches_torch_on_both_sides_and_at_the_edge():
    """GPT.clip: the returned norm and the scaled arrays, p = 2, 1 and ∞, below, above and
    exactly at max_norm."""
    rng = np.random.default_rng(2)
    grads = [rng.normal(size=(3, 4)), rng.normal(size=5)]
    for p in (2.0, 1.0, math.inf):
        norm = float(torch.nn.utils.get_total_norm([torch.tensor(g) for g in grads], p))
        for max_norm in (norm / 3, norm, norm + 1e-6, norm * 3):
            ours = [g.copy() for g in grads]
            theirs = [torch.tensor(g, requires_grad=True) for g in grads]
            for t, g in zip(theirs, grads, strict=True):
                t.grad = torch.tensor(g)
            total = clip_grad_norm_(ours, max_norm, p)
            expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, p)
            assert abs(total - expected.item()) <= 1e-14 * expected.item()
            for a, t in zip(ours, theirs, strict=True):
                np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_(grads, 0.0)


def test_warmup_cosine_schedule_edges():
    """GPT.warmup-cosine at t = 0, W − 1, W, D, D + 1 (closed form) and the refused D ≤ W."""
    lr = lambda t: warmup_cosine_lr(t, 1.0, 3, 8, 0.1)  # noqa: E731
    assert lr(0) == 0.25 and lr(2) == 0.75 and lr(3) == 1.0
    assert lr(8) == pytest.approx(0.1, abs=1e-16) and lr(9) == 0.1 and lr(100) == 0.1
    with pytest.raises(ValueError, match="lr_decay_iters"):
        WarmupCosineLR(None, warmup_iters=5, lr_decay_iters=5)


def test_float32_matches_the_float64_oracle_within_the_stated_tolerance():
    """Float32 model vs float64 torch: every quantity within F32_TOL·max|oracle| (stated in
    the module; the measured worst case printed for the report)."""
    worst = 0.0
    for seed, config in enumerate(
        [GPTConfig(17, 8, 3, 4, 16), GPTConfig(9, 5, 1, 1, 4, bias=False)]
    ):
        model64 = random_model(config, seed)
        model32 = GPT(config, dtype=np.float32).eval()
        model32.load_state_dict(model64.state_dict())
        model64.load_state_dict({k: v.astype(np.float32) for k, v in model64.state_dict().items()})
        idx, targets = random_batch(config, seed, 3, config.block_size)
        result = model32.backprop(idx, targets, keep_logits=True)
        for comparison in gpt_comparisons(model64, idx, targets):
            if comparison.name == "loss":
                actual = np.array(result.loss)
            elif comparison.name == "logits":
                actual = result.logits
            else:
                actual = result.params[comparison.name.removeprefix("∂C/∂")]
            bound = (
                np.abs(comparison.expected).max()
                if comparison.scale is None
                else comparison.scale.max()
            )
            error = float(np.abs(actual - comparison.expected).max() / bound)
            worst = max(worst, error)
    print(f"float32 worst relative error {worst:.2e} (tolerance {F32_TOL:.0e})")
    assert worst <= F32_TOL


def test_initialisation_is_gpt2s():
    """N(0, 0.02²) weights, c_proj N(0, (0.02/√(2L))²), zero biases, LayerNorm 1/0."""
    config = GPTConfig(300, 64, 3, 2, 64)
    model = GPT(config, seed=0)
    residual = 0.02 / math.sqrt(2 * config.n_layer)
    for name, array in model.named_parameters():
        if name.endswith("c_proj.weight"):
            assert abs(array.std() / residual - 1) < 0.05, name
        elif (".ln_" in name or "ln_f" in name) and name.endswith("weight"):
            assert (array == 1).all(), name
        elif name.endswith("bias"):
            assert not array.any(), name
        else:
            assert abs(array.std() / 0.02 - 1) < 0.05 and abs(array.mean()) < 2e-3, name


def test_decay_group_is_the_two_dimensional_weights():
    """nanoGPT's groups: the linear weights and embeddings decay; biases and LayerNorm don't."""
    model = GPT(GPTConfig(11, 4, 2, 2, 4), seed=0)
    names = [n for n, _ in model.named_parameters()]
    decayed = {names[i] for i in model.regularized_indices()}
    assert decayed == {
        n for n in names if n.endswith("weight") and ".ln_" not in n and "ln_f" not in n
    }
    optimizer = configure_optimizers(model, weight_decay=0.5, learning_rate=0.1)
    zero = [np.zeros_like(p) for p in model.parameter_arrays()]
    before = model.state_dict()
    optimizer.step(model.parameter_arrays(), zero)  # zero gradients: only the decay moves θ
    after = model.state_dict()
    for name in names:
        factor = 1 - 0.1 * 0.5 if name in decayed else 1.0
        np.testing.assert_allclose(after[name], before[name] * factor, rtol=1e-15)


def test_state_dicts_of_nanogpt_and_hugging_face_load():
    """nanoGPT's keys and layouts load as they are; HF's (no ``transformer.`` prefix,
    Conv1D weights transposed, causal-mask buffers, no tied lm_head copy) through the
    converter; the serializer round-trips the model."""
    config = GPTConfig(10, 6, 2, 2, 8)
    model = random_model(config, 11)
    twin = torch_gpt_like(model)
    fresh = GPT(config, seed=1)
    fresh.load_state_dict(from_torch_state_dict(twin.state_dict()))
    np.testing.assert_array_equal(fresh.flat_parameters, model.flat_parameters)
    hf = {}
    for key, value in twin.state_dict().items():
        if key == "lm_head.weight":
            continue
        short = key.removeprefix("transformer.")
        if short.endswith(("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                           "mlp.c_proj.weight")):  # fmt: skip
            value = value.T.contiguous()
        hf[short] = value
    hf["h.0.attn.bias"] = torch.ones(1, 1, 6, 6).tril()
    fresh = GPT(config, seed=2)
    fresh.load_state_dict(from_torch_state_dict(hf, hf=True))
    np.testing.assert_array_equal(fresh.flat_parameters, model.flat_parameters)
    copy = model.copy()
    np.testing.assert_array_equal(copy.flat_parameters, model.flat_parameters)
    assert copy.get_config() == model.get_config()


def test_generate_samples_within_the_vocabulary_and_top_1_is_greedy():
    config = GPTConfig(7, 4, 1, 1, 4)
    model = random_model(config, 13)
    start = np.array([[1, 2], [3, 4]])
    out = model.generate(start, 6, temperature=0.8, top_k=3, rng=0)
    assert out.shape == (2, 8) and (out[:, :2] == start).all() and out.max() < 7
    greedy = model.generate(start, 5, top_k=1, rng=1)
    idx = start
    for _ in range(5):
        idx = np.concatenate([idx, model(idx[:, -4:])[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(greedy, idx)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(start, 1, temperature=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: GPTConfig(0, 4, 1, 1, 4), "vocab_size"),
        (lambda: GPTConfig(5, 4, 1, 3, 4), "n_head"),
        (lambda: GPTConfig(5, 4, 1, 1, 4, dropout=1.0), "dropout"),
        (lambda: GPT(GPTConfig(5, 4, 1, 1, 4))(np.zeros((1, 5), int)), "block_size"),
        (lambda: GPT(GPTConfig(5, 4, 1, 1, 4))(np.full((1, 2), 5)), "outside"),
        (lambda: GPT(GPTConfig(5, 4, 1, 1, 4))(np.zeros((1, 2))), "integer"),
        (
            lambda: GPT(GPTConfig(5, 4, 1, 1, 4)).backprop(
                np.zeros((1, 2), int), np.full((1, 2), -2)
            ),
            "y holds",  # the argument the caller passed
        ),
        (
            lambda: GPT(GPTConfig(5, 4, 1, 1, 4)).loss(np.zeros((1, 2), int), np.full((1, 2), 5)),
            "targets holds",
        ),
    ],
)
def test_bad_input_is_one_clear_line(call, message):
    with pytest.raises((ValueError, TypeError), match=message) as error:
        call()
    assert "\n" not in str(error.value)


def test_the_library_training_loop_trains_it_and_the_serializer_keeps_it(tmp_path):
    """The one model protocol: ``train(..., fast=False)`` (readable step, monitoring) learns
    the copy task, and ``save``/``load`` return the same model (the fused trainer's support
    is the training wave's)."""
    from manual_bp.serialization import load, save
    from manual_bp.training import train

    model = GPT(GPTConfig(11, 8, 2, 2, 16), seed=0)
    x = np.random.default_rng(0).integers(0, 11, (64, 8))
    history = train(model, x, x, epochs=4, batch_size=16, fast=False,
                    optimizer={"name": "adamw", "lr": 1e-2}, seed=0)  # fmt: skip
    assert history.training_cost[-1] < 0.5 * history.training_cost[0]
    assert model.accuracy(x, x) == 1.0
    for suffix in (".npz", ".json"):
        loaded = load(save(model, tmp_path / f"gpt{suffix}"))
        assert isinstance(loaded, GPT) and loaded.get_config() == model.get_config()
        np.testing.assert_array_equal(loaded.flat_parameters, model.flat_parameters)
