"""torch stand-ins for manual_bp layers that have no one-input ``nn`` module of their own.

torch's recurrent modules return tuples (``out, h_n`` or ``out, (h_n, c_n)``) and
``nn.MultiheadAttention`` takes three inputs, so they cannot sit in an ``nn.Sequential`` as they
are; a skip connection and a per-sample reshape have no ``nn`` module at all. The state-dict
names of these stand-ins are their base modules' (and manual_bp's), so parameters copy 1:1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["GRUSequence", "LSTMSequence", "RNNSequence", "Reshape", "Residual", "SelfAttention"]


class LSTMSequence(nn.LSTM):
    """``nn.LSTM`` (``batch_first=True`` unless told) whose forward returns the output only."""

    def __init__(self, *args: Any, batch_first: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, batch_first=batch_first, **kwargs)

    def forward(self, x: torch.Tensor, hx: Any = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, hx)[0]


class GRUSequence(nn.GRU):
    """``nn.GRU`` (``batch_first=True`` unless told) whose forward returns the output only."""

    def __init__(self, *args: Any, batch_first: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, batch_first=batch_first, **kwargs)

    def forward(self, x: torch.Tensor, hx: Any = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, hx)[0]


class RNNSequence(nn.RNN):
    """``nn.RNN`` (``batch_first=True`` unless told) whose forward returns the output only."""

    def __init__(self, *args: Any, batch_first: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, batch_first=batch_first, **kwargs)

    def forward(self, x: torch.Tensor, hx: Any = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, hx)[0]


class SelfAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` as a one-input layer: ``attn(x, x, x)``.

    ``causal=True`` adds the float causal mask (−inf above the diagonal), manual_bp's
    ``MultiheadAttention(causal=True)``. ``batch_first=True`` unless told.
    """

    def __init__(
        self, embed_dim: int, num_heads: int, *, causal: bool = False, batch_first: bool = True,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(embed_dim, num_heads, batch_first=batch_first, **kwargs)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        mask = None
        if self.causal:
            n = x.shape[1 if self.batch_first else 0]
            mask = torch.full((n, n), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        return super().forward(x, x, x, attn_mask=mask, need_weights=False)[0]


class Residual(nn.Sequential):
    """``x + f(x)`` with ``f`` the modules in order: manual_bp's ``Residual`` (same names)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x + super().forward(x)


class Reshape(nn.Module):
    """Every sample reshaped to ``shape`` (``x.reshape(len(x), *shape)``): manual_bp's Reshape."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return ", ".join(map(str, self.shape))
