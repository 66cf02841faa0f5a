"""Deprecated: moved to :mod:`manual_bp.models.network` (the one-model layout, ``manual_bp.models``).

Kept so that ``import manual_bp.network`` keeps working; it will be removed in a later
release. Import from ``manual_bp.models.network`` (or the top level, ``from manual_bp import ...``).
"""

import warnings

from manual_bp.models.network import Gradients, Network

warnings.warn(
    "manual_bp.network is deprecated: import from manual_bp.models.network (or manual_bp)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["Gradients", "Network"]
