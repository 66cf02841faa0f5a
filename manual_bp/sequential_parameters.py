"""Deprecated: moved to :mod:`manual_bp.models.parameters` (the one-model layout, ``manual_bp.models``).

Kept so that ``import manual_bp.sequential_parameters`` keeps working; it will be removed in a later
release. Import from ``manual_bp.models.parameters`` (or the top level, ``from manual_bp import ...``).
"""

import warnings

from manual_bp.models.parameters import StackParameters

warnings.warn(
    "manual_bp.sequential_parameters is deprecated: import from manual_bp.models.parameters (or manual_bp)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["StackParameters"]
