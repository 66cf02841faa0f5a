"""The fused training step of a :class:`~manual_bp.models.gpt.GPT` (``docs/gpt.md``, "Speed").

:meth:`GPT.backprop <manual_bp.models.gpt.GPT.backprop>` is the readable step: every part's
readable forward/backward, fresh arrays, a dict of gradients. :class:`GPTFastStep` runs the
same equations (``GPT.block``, ``GPT.tied``, ``GPT.lm-ce``, ``GPT.causal``, ``GPT.qkv``)
through the layers' fast forms, into buffers kept per batch shape:

* the embedding: ``x = wte[idx] + wpe[:T]`` gathered into ONE residual-stream buffer;
* each block: ``LayerNormStep`` → ``AttentionStep`` (one q/k/v GEMM, the causal mask added
  once, softmax and its VJP in place) → ``x += a`` in place → ``LayerNormStep`` →
  ``DenseStep`` → tanh-GELU ``ActivationStep`` (in place) → ``DenseStep`` → ``x += m``.
  LayerNorm keeps ``x̂``, the GEMMs their inputs (the LayerNorm/GELU buffers): the residual
  stream itself is needed by no backward, so one buffer carries it through all blocks, and
  one gradient buffer carries ``∂x`` back (``∂h = ∂y + J_ln₂ᵀ J_mlpᵀ ∂y`` as ``+=``);
* the vocabulary projection and cross-entropy fused (``GPT.lm-ce``): one ``(B·T, V)``
  buffer holds the logits, then (row blocks in cache, rows over threads) ``exp(z − max)``,
  then ``∂C/∂z = (p − onehot(y))/n``; ``∂W = (∂C/∂z)ᵀ x`` is written straight into the
  gradient slot and ``∂x = (∂C/∂z) W``;
* the tied weight (``GPT.tied``): the head's ``∂W`` GEMM writes ``wte``'s ONE slot of the
  flat gradient buffer, the embedding's scatter-add (sorted, ``add.reduceat``) is added to
  it — the two uses' sum, no second (V, E) array;
* every gradient is a view of one flat buffer laid out like ``model.flat_parameters``, so
  global-norm clipping and grouped AdamW run over flat buffers
  (:meth:`GroupedAdamW.step_flat <manual_bp.training.gpt_train.GroupedAdamW.step_flat>`).

Everything stays in the model's dtype (no float64 temporary on the float32 path but the
per-row loss terms, ``B·T`` numbers). Dropout is not fused: a config with ``dropout > 0`` is
refused (train it on the readable path). Results equal the readable step's to rounding
(``tests/test_gpt_fast.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp._threads import parallel_rows
from manual_bp.activations.smooth import _GELU_CLIP, _GELU_TANH_BETA, _GELU_TANH_KAPPA
from manual_bp.layers.steps import shape_buffers

__all__ = ["FlatGradients", "GPTFastStep", "GeluTanhStep", "lm_cross_entropy_into"]

#: elements of one block of the tanh-GELU's passes (all its passes while in L1/L2)
GELU_BLOCK = 1 << 13
#: rows of the (B·T, V) logits per pass: 8 rows of 50 304 float32 (1.6 MB) stay in L2/L3
ROW_BLOCK = 8


class FlatGradients(list):
    """The fast step's gradients: a list of views (``parameter_arrays()`` order) of ONE flat
    buffer, ``flat``, laid out like the model's ``flat_parameters``."""

    flat: np.ndarray


def lm_cross_entropy_into(
    z: np.ndarray, y: np.ndarray, ignore_index: int, row_max: np.ndarray, row_sum: np.ndarray
) -> float:
    """``GPT.lm-ce`` in place on logits ``z`` (R, V): returns the mean cross-entropy over the
    ``n`` counted rows and leaves ``∂C/∂z = (softmax(z) − onehot(y)) / n`` (0 on ignored
    rows) in ``z``. ``row_max``, ``row_sum``: (R,) buffers of ``z``'s dtype. Row blocks of
    :data:`ROW_BLOCK` do all passes while in cache; threads take contiguous row slices (the
    same bits for any slicing)."""
    r_count = z.shape[0]
    counted = y != ignore_index
    n = int(counted.sum())
    if n == 0:
        raise ValueError("targets: every position is ignore_index; the mean loss is undefined")
    safe_y = np.where(counted, y, 0)
    picked = np.empty(r_count, z.dtype)
    inv_n = 1.0 / n

    def work(rows: slice) -> None:
        for start in range(rows.start, rows.stop, ROW_BLOCK):
            b = slice(start, min(start + ROW_BLOCK, rows.stop))
            zb, mb, sb = z[b], row_max[b], row_sum[b]
            np.max(zb, axis=1, out=mb)
            zb -= mb[:, None]  # the stable form: softmax is shift-invariant
            picked[b] = zb[np.arange(zb.shape[0]), safe_y[b]]
            np.exp(zb, out=zb)
            np.sum(zb, axis=1, out=sb)
            zb /= sb[:, None]  # p = softmax(z)
            zb[np.arange(zb.shape[0]), safe_y[b]] -= 1.0  # p − onehot(y)
            zb *= inv_n

    parallel_rows(work, r_count, z.shape[1])
    if not counted.all():
        z[~counted] = 0.0
    # the loss from B·T numbers: log Σ exp(z − max) − (z_y − max), mean over counted rows
    terms = np.log(row_sum[counted].astype(np.float64)) - picked[counted]
    return float(terms.sum() / n)


class GeluTanhStep:
    """tanh-GELU in place for the fused step (``ACT.gelu``, GPT-2's ``gelu_new``)::

        u = β (z + κ z³),  t = tanh u,  a = ½ z (1 + t)
        σ′(z) = ½ (1 + t) + ½ z (1 − t)(1 + t) β (1 + 3κ z²)

    as the readable :class:`~manual_bp.activations.GELU`'s tanh form (``z`` clipped to
    ±1e3 first, where ``t = ±1`` already: no power overflows, no ``0 · ∞``). Rows are cut
    over the threads and each slice runs in blocks of :data:`GELU_BLOCK` elements, every
    pass while the block is in cache; ``t`` and the clipped ``z`` are kept for the VJP."""

    def __init__(self) -> None:
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}

    def forward(self, z: np.ndarray) -> np.ndarray:
        self.z_clip, self.t, self.out, self.scratch = shape_buffers(
            self._buffers, (z.shape, z.dtype.str), lambda: tuple(np.empty_like(z) for _ in "1234")
        )
        zf, zc, t, a = (
            z.reshape(-1),
            self.z_clip.reshape(-1),
            self.t.reshape(-1),
            self.out.reshape(-1),
        )

        def work(r: slice) -> None:
            for start in range(r.start, r.stop, GELU_BLOCK):
                b = slice(start, min(start + GELU_BLOCK, r.stop))
                zb, tb, ab = zc[b], t[b], a[b]
                np.clip(zf[b], -_GELU_CLIP, _GELU_CLIP, out=zb)
                np.multiply(zb, zb, out=tb)
                tb *= _GELU_TANH_KAPPA
                tb += 1.0
                tb *= zb
                tb *= _GELU_TANH_BETA  # u = β (z + κ z³)
                np.tanh(tb, out=tb)
                np.add(tb, 1.0, out=ab)
                ab *= zf[b]
                ab *= 0.5  # a = ½ z (1 + t)

        parallel_rows(work, zf.size, 1)
        return self.out

    def backward(self, g: np.ndarray, grads: dict, need_dx: bool) -> np.ndarray:
        gf, zc, t, q = (
            g.reshape(-1),
            self.z_clip.reshape(-1),
            self.t.reshape(-1),
            self.scratch.reshape(-1),
        )

        def work(r: slice) -> None:
            for start in range(r.start, r.stop, GELU_BLOCK):
                b = slice(start, min(start + GELU_BLOCK, r.stop))
                zb, tb, qb = zc[b], t[b], q[b]
                np.multiply(zb, zb, out=qb)
                qb *= 3.0 * _GELU_TANH_KAPPA
                qb += 1.0
                qb *= _GELU_TANH_BETA  # u′ = β (1 + 3κ z²)
                qb *= zb
                np.subtract(1.0, tb, out=zb)  # the clipped z is spent: (1 − t)
                qb *= zb
                np.add(tb, 1.0, out=zb)  # (1 + t)
                qb *= zb
                qb += zb  # z (1 − t)(1 + t) u′ + (1 + t)
                qb *= 0.5
                gf[b] *= qb  # the VJP: g ⊙ σ′(z)

        parallel_rows(work, gf.size, 1)
        return g


class GPTFastStep:
    """Fused forward + backward of a :class:`~manual_bp.models.gpt.GPT` into one flat
    gradient buffer (see the module). ``loss_and_gradients(idx, targets)`` is the training
    step's protocol: ``(C, FlatGradients)``; the gradient views are reused step after step."""

    def __init__(self, model: Any) -> None:
        c = model.config
        if c.dropout:
            raise ValueError(
                f"GPT: the fast step does not fuse dropout ({c.dropout}); train with the "
                "readable step (model.fast_training = False, train(..., fast=False)) or dropout=0"
            )
        self.model = model
        embedding, *blocks, ln_f, head = model.layers
        self.wte, self.wpe = embedding.wte.params["weight"], embedding.wpe.params["weight"]
        self.head_weight = head.weight
        self.grad = np.zeros_like(model.flat_parameters)
        slot = lambda array: model.same_place(self.grad, array)  # noqa: E731
        self.g_wte, self.g_wpe = slot(self.wte), slot(self.wpe)
        self.g_head = slot(self.head_weight)  # wte's own slot when tied (GPT.tied)
        self.tied = model.tied
        self.blocks = []
        for block in blocks:
            parts = (block.ln_1, block.attn.attention, block.ln_2, block.mlp.c_fc,
                     block.mlp.gelu, block.mlp.c_proj)  # fmt: skip
            steps = [part.fast_step() for part in parts]
            steps[4] = GeluTanhStep()  # in blocks, no temporaries (the layer's form allocates)
            grads = [{k: slot(v) for k, v in part.params.items()} for part in parts]
            self.blocks.append((steps, grads))
        self.ln_f = ln_f.fast_step()
        self.ln_f_grads = {k: slot(v) for k, v in ln_f.params.items()}
        self.grads = FlatGradients(slot(p) for p in model.parameter_arrays())
        self.grads.flat = self.grad
        self._buffers: dict[tuple, tuple[np.ndarray, ...]] = {}

    def _make(self, b: int, t: int) -> tuple[np.ndarray, ...]:
        dt, E, V = self.wte.dtype, self.wte.shape[1], self.head_weight.shape[0]
        return (
            np.empty((b, t, E), dt),  # the residual stream x
            np.empty((b * t, V), dt),  # logits, then ∂C/∂logits
            np.empty((b, t, E), dt),  # ∂x, the residual stream's gradient
            np.empty(b * t, dt),  # row max
            np.empty(b * t, dt),  # row sum
        )

    def loss_and_gradients(self, idx: np.ndarray, targets: np.ndarray) -> tuple[float, list]:
        """Mean loss and ``∂C/∂θ`` (views of :attr:`grad`) for checked int64 ``idx``,
        ``targets`` (B, T) (the model's ``_inputs_and_targets``)."""
        b, t = idx.shape
        x, logits, dx, row_max, row_sum = shape_buffers(
            self._buffers, (b, t), lambda: self._make(b, t)
        )
        # ---- forward: embedding (EMB.lookup), blocks (GPT.block), ln_f, head
        np.take(self.wte, idx, axis=0, out=x, mode="clip")  # indices checked by the model
        x += self.wpe[:t]
        for (ln_1, attn, ln_2, fc, gelu, proj), _ in self.blocks:
            x += attn.forward(ln_1.forward(x))  # h = x + attn(ln_1(x)), in place
            x += proj.forward(gelu.forward(fc.forward(ln_2.forward(x))))
        final = self.ln_f.forward(x).reshape(b * t, -1)
        np.matmul(final, self.head_weight.T, out=logits)
        loss = lm_cross_entropy_into(
            logits, targets.reshape(-1), self.model.ignore_index, row_max, row_sum
        )
        # ---- backward: head (∂W straight into its slot: wte's when tied), ln_f, blocks
        np.matmul(logits.T, final, out=self.g_head)
        np.matmul(logits, self.head_weight, out=dx.reshape(b * t, -1))
        dx[...] = self.ln_f.backward(dx, self.ln_f_grads, True)
        for (ln_1, attn, ln_2, fc, gelu, proj), grads in reversed(self.blocks):
            g_ln_1, g_attn, g_ln_2, g_fc, g_gelu, g_proj = grads
            dm = fc.backward(gelu.backward(proj.backward(dx, g_proj, True), g_gelu, True),
                             g_fc, True)  # fmt: skip
            dx += ln_2.backward(dm, g_ln_2, True)  # GPT.block: the skip path and the branch
            dx += ln_1.backward(attn.backward(dx, g_attn, True), g_ln_1, True)
        self._embedding_backward(idx, dx)
        return loss, self.grads

    def _embedding_backward(self, idx: np.ndarray, dx: np.ndarray) -> None:
        """``∂C/∂wpe[:T] = Σ_b ∂x_b``; ``∂C/∂wte[k] += Σ_{idx=k} ∂x`` (sorted, segmented
        sums), ADDED to the head's ∂W already in the slot when tied (``GPT.tied``)."""
        t, E = idx.shape[1], dx.shape[-1]
        self.g_wpe[t:] = 0.0
        np.sum(dx, axis=0, out=self.g_wpe[:t])
        index = idx.reshape(-1)
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        sums = np.add.reduceat(dx.reshape(-1, E)[order], starts, axis=0)
        if self.tied:
            self.g_wte[ordered[starts]] += sums  # rows distinct: a fancy += adds each once
        else:
            self.g_wte[...] = 0.0
            self.g_wte[ordered[starts]] = sums
