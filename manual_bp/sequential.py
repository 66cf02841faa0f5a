"""Deprecated: ``manual_bp.sequential`` moved into :mod:`manual_bp.models` (one model).

Kept so that ``import manual_bp.sequential`` keeps working; it will be removed in a later
release. Import from :mod:`manual_bp.models` or the top level (``from manual_bp import ...``).
"""

import warnings

from manual_bp.models.sequential import Sequential, StackGradients

warnings.warn(
    "manual_bp.sequential is deprecated: import from manual_bp.models.sequential (or manual_bp)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["Sequential", "StackGradients"]
