"""GPT-2 (nanoGPT's ``GPT``) from the library's own layers: a model of the one-model protocol.

:class:`GPT` is a :class:`~manual_bp.models.sequential.Sequential` whose top-level layers are
``transformer`` (token + position embedding), ``transformer.h.{i}`` (pre-norm blocks),
``transformer.ln_f`` and ``lm_head`` (:mod:`manual_bp.models.gpt_layers`), so the state-dict
names are nanoGPT's (``transformer.h.0.attn.c_attn.weight`` …) and the flat buffer, the
optimizers and the serializer take it as any stack. What it adds to the protocol:

* a **tied** output projection (``GPT.tied``): ``lm_head`` owns no parameter; its gradient is
  added to ``transformer.wte.weight``'s, and the state dict lists ``lm_head.weight`` (equal to
  ``wte``'s) as nanoGPT's does;
* the **fused** vocabulary projection and cross-entropy (``GPT.lm-ce``): the logits buffer is
  turned into the probabilities and then into ``∂C/∂logits`` in place, one (B·T, V) matrix;
  targets equal to ``ignore_index = -1`` are left out of the mean, as nanoGPT's.

Derivations: ``docs/gpt.md``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from manual_bp._validation import check_layer_array, check_nonempty
from manual_bp.layers._entry import memory_limit
from manual_bp.layers.containers import stack_backward
from manual_bp.layers.normalisation import LayerNorm
from manual_bp.models.gpt_fast import GPTFastStep
from manual_bp.models.gpt_layers import (
    IGNORE_INDEX,
    Block,
    GPTEmbedding,
    LMHead,
    cross_entropy_fused,
)
from manual_bp.models.parameters import IncompatibleKeys
from manual_bp.models.sequential import MODELS, Sequential

__all__ = ["GPT", "GPTConfig", "GPTGradients", "cross_entropy_fused"]


@dataclass(frozen=True)
class GPTConfig:
    """nanoGPT's ``GPTConfig`` (its names); ``n_head`` divides ``n_embd``."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True
    tie_weights: bool = True

    def __post_init__(self) -> None:
        from manual_bp._arguments import check_count, check_flag, check_number

        # NumPy scalars are taken and stored as Python's (the config is saved as JSON)
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = check_count(getattr(self, name), f"GPTConfig: {name}", minimum=1)
            object.__setattr__(self, name, value)
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig: n_head {self.n_head} does not divide n_embd {self.n_embd}"
            )
        dropout = check_number(self.dropout, "GPTConfig: dropout", zero=True)
        if dropout >= 1.0:
            raise ValueError(f"GPTConfig: dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", dropout)
        for name in ("bias", "tie_weights"):
            object.__setattr__(self, name, check_flag(getattr(self, name), f"GPTConfig: {name}"))


@dataclass
class GPTGradients:
    """One backward pass: the mean loss, the gradients by state-dict name and the logits
    (``None`` unless asked: the fused loss overwrites them)."""

    loss: float
    params: dict[str, np.ndarray]
    logits: np.ndarray | None = None


def _check_fits_in_memory(c: GPTConfig, dtype: np.dtype) -> None:
    """Refuse, before building a layer, a config whose parameters and gradients alone
    exceed the machine's memory (``n_layer = 2**40`` would build blocks for ever)."""
    e, bias = c.n_embd, int(c.bias)
    block = 12 * e * e + (9 + 4 * bias) * e  # c_attn, c_proj, c_fc, c_proj; ln_1, ln_2
    head = 0 if c.tie_weights else c.vocab_size * e
    count = (c.vocab_size + c.block_size) * e + c.n_layer * block + (1 + bias) * e + head
    needed, limit = 2 * count * dtype.itemsize, memory_limit()
    if needed > limit:
        raise ValueError(
            f"GPT: config has {count:.3g} parameters, {needed / 2**30:.3g} GiB with their "
            f"gradients as {dtype}: more than this machine's memory ({limit / 2**30:.3g} GiB)"
        )


def _check_counted(targets: np.ndarray, name: str) -> None:
    """Refuse targets with no counted position (all ``ignore_index``)."""
    if not (targets != IGNORE_INDEX).any():
        raise ValueError(
            f"GPT: {name} has no counted position (every target is ignore_index "
            f"{IGNORE_INDEX}); a mean loss over none is undefined"
        )


class GPT(Sequential):
    """GPT-2 / nanoGPT's ``GPT`` (see the module docstring).

    Parameters
    ----------
    config : GPTConfig
    seed : int or Generator, optional — GPT-2's initialisation from this seed
        (:meth:`reset_parameters`)
    dtype : float64 (default) or float32

    ``forward(x)`` gives ``(logits, caches)`` for token indices ``x`` (B, T), T ≤
    ``block_size``; :meth:`backprop` (``idx``, ``targets``) the mean loss and every gradient.
    """

    name = "gpt"

    def __init__(
        self,
        config: GPTConfig,
        *,
        seed: int | np.random.Generator | None = None,
        dtype: Any = np.float64,
    ) -> None:
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = c = config
        dtype = np.dtype(dtype)
        _check_fits_in_memory(c, dtype)
        embedding = GPTEmbedding(c.vocab_size, c.block_size, c.n_embd, c.dropout, dtype)
        blocks = [Block(c.n_embd, c.n_head, c.dropout, c.bias, dtype) for _ in range(c.n_layer)]
        ln_f = LayerNorm(c.n_embd, bias=c.bias, dtype=dtype)
        tied = embedding.wte if c.tie_weights else None
        head = LMHead(c.n_embd, c.vocab_size, tied, dtype)
        self.layers = [embedding, *blocks, ln_f, head]
        self.names = ["transformer", *(f"transformer.h.{i}" for i in range(c.n_layer)),
                      "transformer.ln_f", "lm_head"]  # fmt: skip
        self._construct("log-likelihood", None, dtype, None)
        self.ignore_index = IGNORE_INDEX
        self._allocate()
        self.reset_parameters(seed)

    def _construct(self, cost: Any, input_shape: Any, dtype: Any, ignore_index: Any) -> None:
        from manual_bp.models.loss_cost import resolve_cost

        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.cost = resolve_cost(cost)
        self.input_shape = self.output_shape = None

    @property
    def tied(self) -> bool:
        return self.config.tie_weights

    # ------------------------------------------------------------------ initialisation
    def reset_parameters(self, seed: int | np.random.Generator | None) -> None:
        """GPT-2's initialisation (nanoGPT's ``_init_weights``): every linear and embedding
        weight ``N(0, 0.02²)``, the residual projections' (``c_proj``) ``N(0, (0.02/√(2L))²)``
        for ``L = n_layer`` (so the residual stream's variance stays O(1) in depth), biases 0,
        LayerNorm weights 1 and biases 0."""
        rng = np.random.default_rng(seed)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, array in self.named_parameters():
            if name.endswith("c_proj.weight"):
                array[...] = rng.normal(0.0, residual_std, array.shape)
            elif ".ln_" in name or "ln_f" in name:
                array[...] = 1.0 if name.endswith("weight") else 0.0
            elif name.endswith("bias"):
                array[...] = 0.0
            else:
                array[...] = rng.normal(0.0, 0.02, array.shape)

    # ------------------------------------------------------------------ data
    def check_batch_array(self, x: Any, name: str = "x") -> np.ndarray:
        """Token indices ``(B, T)`` as int64: integers in ``[0, vocab_size)``, ``1 ≤ T ≤
        block_size``; ``B = 0`` passes (empty logits, as nanoGPT's forward). The model's one
        input check (every entry, with the caller's argument ``name``)."""
        check_layer_array(x, "GPT", name, indices=True)  # not an array, complex, bool …
        if x.dtype.kind not in "iu":  # torch's embedding takes Long/Int indices only
            raise TypeError(f"GPT: {name} holds token indices and must be integers, got {x.dtype}")
        if x.ndim != 2 or not 1 <= x.shape[1] <= self.config.block_size:
            raise ValueError(
                f"GPT: {name} has shape {x.shape}; expected (batch, T) token indices with "
                f"1 <= T <= block_size {self.config.block_size}"
            )
        if x.size and (x.min() < 0 or x.max() >= self.config.vocab_size):
            raise ValueError(f"GPT: {name} holds indices outside [0, {self.config.vocab_size})")
        return x.astype(np.int64, copy=False)

    def prepare_inputs(self, x: Any, name: str = "x") -> np.ndarray:
        """:meth:`check_batch_array`, not empty: the inputs of a mean loss."""
        x = self.check_batch_array(x, name)
        check_nonempty(x, f"GPT: {name}")
        return x

    def prepare_targets(self, y: Any, batch: int, name: str = "y") -> np.ndarray:
        """Next-token indices ``(batch, T)`` as int64, in ``[0, vocab_size)`` or ``-1``
        (``ignore_index``: left out of the mean), at least one counted (the targets of a mean:
        torch's mean over none is NaN, which the library never returns)."""
        check_layer_array(y, "GPT", name, indices=True)
        if y.dtype.kind not in "iu":
            raise TypeError(f"GPT: {name} holds token indices and must be integers, got {y.dtype}")
        if y.ndim != 2 or y.shape[0] != batch:
            raise ValueError(f"GPT: {name} has shape {y.shape}; expected ({batch}, T)")
        if y.size and (y.min() < IGNORE_INDEX or y.max() >= self.config.vocab_size):
            raise ValueError(
                f"GPT: {name} holds indices outside [0, {self.config.vocab_size}) and -1"
            )
        _check_counted(y, name)
        return y.astype(np.int64, copy=False)

    def _inputs_and_targets(
        self, x: Any, y: Any, names: tuple[str, str] = ("x", "y")
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of a mean loss, of one shape, the callers' ``names`` in messages."""
        x = self.prepare_inputs(x, names[0])
        y = self.prepare_targets(y, x.shape[0], names[1])
        if y.shape != x.shape:
            raise ValueError(
                f"GPT: {names[1]} has shape {y.shape}; the next tokens of {names[0]} "
                f"{x.shape} have its shape"
            )
        return x, y

    # ------------------------------------------------------------------ forward / backward
    def loss(self, idx: Any, targets: Any) -> float:
        """The mean cross-entropy of the next tokens (nanoGPT's ``loss``)."""
        idx, targets = self._inputs_and_targets(idx, targets, ("idx", "targets"))
        return cross_entropy_fused(self._stack_forward(idx)[0], targets)[0]

    def backprop(
        self, x: Any, y: Any, *, input_grad: bool = False, keep_logits: bool = False
    ) -> GPTGradients:
        """Loss and gradients by state-dict name (``GPT.block``, ``GPT.tied``, ``GPT.lm-ce``).
        ``keep_logits`` keeps a copy of the logits (the fused loss overwrites the buffer)."""
        x, targets = self._inputs_and_targets(x, y)
        logits, caches = self._stack_forward(x)
        kept = logits.copy() if keep_logits else None
        loss, d_logits = cross_entropy_fused(logits, targets)
        _, grads = stack_backward(self.layers, d_logits, caches, input_grad=False)
        named = {
            f"{prefix}{name}": grad
            for prefix, layer_grads in zip(self._name_prefixes(), grads, strict=True)
            for name, grad in layer_grads.items()
        }
        head = named.pop("lm_head.weight")
        if self.tied:  # GPT.tied: one parameter used twice, its gradient the sum of both uses
            named["transformer.wte.weight"] = named["transformer.wte.weight"] + head
        else:
            named["lm_head.weight"] = head
        return GPTGradients(loss, named, kept)

    def _backprop(self, x: Any, y: Any, *, input_grad: bool, received: list | None = None):
        return self.backprop(x, y)

    #: whether :meth:`loss_and_gradients` (the training step) runs the fused step
    #: (:class:`~manual_bp.models.gpt_fast.GPTFastStep`: gradients as views of one flat
    #: buffer, which :class:`~manual_bp.training.gpt_train.NanoGPTStep` clips and updates
    #: flat) instead of :meth:`backprop`, the readable reference it is checked against
    fast_training = False

    def fused_step_refusal(self) -> str | None:
        """Why :attr:`fast_training` cannot fuse this GPT's step (one line), or ``None``.
        ``train(..., fast=True)`` asks this before any step: a model that fuses its whole
        step itself (the tied weight's two uses in one slot) is trained through its own
        :meth:`loss_and_gradients` with :attr:`fast_training` on, not per-layer steps."""
        if self.config.dropout:
            return (
                f"GPT: the fast step does not fuse dropout ({self.config.dropout}); train with "
                "train(..., fast=False) or dropout=0"
            )
        return None

    def loss_and_gradients(self, x: Any, y: Any) -> tuple[float, list[np.ndarray]]:
        """``(C, [∂C/∂θ in parameter_arrays() order])``: the training step's protocol (the
        fused step's reused views when :attr:`fast_training`, fresh arrays otherwise)."""
        if self.fast_training:
            x, targets = self._inputs_and_targets(x, y)
            step = self.__dict__.get("_fast_step")
            if step is None:
                step = self._fast_step = GPTFastStep(self)
            return step.loss_and_gradients(x, targets)
        result = self.backprop(x, y)
        return result.loss, [result.params[name] for name in self._parameter_names]

    # ------------------------------------------------------------------ evaluation
    def cost_and_outputs(self, x: Any, y: Any) -> tuple[float, np.ndarray]:
        """``(mean loss, logits)`` in evaluation mode (the training loop's monitor)."""
        x, targets = self._inputs_and_targets(x, y)
        logits = self._infer(x)[0]
        return self.output_cost(logits, targets), logits

    def output_cost(self, out: np.ndarray, targets: np.ndarray) -> float:
        """The mean cross-entropy of logits ``out`` (not overwritten) over counted targets."""
        out, targets = self._outputs_and_targets(out, targets)
        return cross_entropy_fused(np.array(out, dtype=self.dtype), targets)[0]

    def output_accuracy(self, out: np.ndarray, targets: np.ndarray) -> float:
        """The fraction of counted positions whose most likely token is the target."""
        out, targets = self._outputs_and_targets(out, targets)
        counted = targets != IGNORE_INDEX
        return float((out.argmax(axis=-1)[counted] == targets[counted]).mean())

    def _outputs_and_targets(self, out: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``(B, T, vocab_size)`` (float32/float64, not empty) and next-token targets
        ``(B, T)`` (:meth:`prepare_targets`) with at least one counted position."""
        check_layer_array(out, "GPT", "out")
        check_nonempty(out, "GPT: out")
        if out.ndim != 3 or out.shape[-1] != self.config.vocab_size:
            raise ValueError(
                f"GPT: out has shape {out.shape}; expected logits (batch, T, "
                f"{self.config.vocab_size})"
            )
        targets = self.prepare_targets(targets, out.shape[0], "targets")
        if targets.shape != out.shape[:-1]:
            raise ValueError(
                f"GPT: targets have shape {targets.shape}; logits {out.shape} take {out.shape[:-1]}"
            )
        return out, targets

    # ------------------------------------------------------------------ state dicts
    def state_dict(self) -> dict[str, np.ndarray]:
        """nanoGPT's state dict (copies): ``lm_head.weight`` listed last, equal to
        ``transformer.wte.weight`` when tied (torch lists a shared tensor under both)."""
        state = {name: array.copy() for name, array in self.named_parameters()}
        if self.tied:
            state["lm_head.weight"] = state["transformer.wte.weight"].copy()
        return state

    def load_state_dict(self, state: Any, strict: bool = True) -> IncompatibleKeys:
        """As :meth:`Sequential.load_state_dict`; a tied model takes ``lm_head.weight`` as
        the shared weight's second name (it must then equal ``transformer.wte.weight``)."""
        state = dict(state)
        if self.tied and "lm_head.weight" in state:
            head = np.asarray(state.pop("lm_head.weight"))
            wte = state.get("transformer.wte.weight")
            if wte is not None and not np.array_equal(head, np.asarray(wte)):
                raise ValueError("lm_head.weight differs from transformer.wte.weight in a tied GPT")
        return super().load_state_dict(state, strict)

    def named_buffers(self) -> list[tuple[str, np.ndarray]]:
        return []

    def regularized_indices(self) -> list[int]:
        """Positions of the 2-D weights (matrices and embeddings): nanoGPT's decay group."""
        return [i for i, (_, p) in enumerate(self.named_parameters()) if p.ndim >= 2]

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "config": asdict(self.config), "dtype": self.dtype.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GPT:
        return cls(GPTConfig(**config["config"]), dtype=config.get("dtype", "float64"))

    def __repr__(self) -> str:
        return f"GPT({self.config!r}, dtype={self.dtype.name})"

    # ------------------------------------------------------------------ sampling
    def generate(
        self,
        idx: Any,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        rng: int | np.random.Generator | None = None,
    ) -> np.ndarray:
        """nanoGPT's ``generate``: append ``max_new_tokens`` samples to ``idx`` (B, T), each
        from ``softmax(logits_last / temperature)`` restricted to the ``top_k`` largest, the
        context cropped to the last ``block_size`` tokens. Runs in evaluation mode.
        ``max_new_tokens ≥ 0``, ``temperature`` finite and ``> 0``, ``top_k ≥ 1`` (above the
        vocabulary: all kept, as nanoGPT's), ``rng`` a seed or Generator: else one line."""
        from manual_bp.models.gpt_sampling import generate

        return generate(self, idx, max_new_tokens, temperature, top_k, rng)


MODELS[GPT.name] = GPT
