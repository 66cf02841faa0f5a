"""Deprecated: moved to :mod:`manual_bp.models.sequential` (the one-model layout, ``manual_bp.models``).

Kept so that ``import manual_bp.sequential`` keeps working; it will be removed in a later
release. Import from ``manual_bp.models.sequential`` (or the top level, ``from manual_bp import ...``).
"""

import warnings

from manual_bp.models.sequential import Sequential, StackGradients

warnings.warn(
    "manual_bp.sequential is deprecated: import from manual_bp.models.sequential (or manual_bp)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["Sequential", "StackGradients"]
