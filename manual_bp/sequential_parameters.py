"""Deprecated: ``manual_bp.sequential_parameters`` moved into :mod:`manual_bp.models` (one model).

Kept so that ``import manual_bp.sequential_parameters`` keeps working; it will be removed in a later
release. Import from :mod:`manual_bp.models` or the top level (``from manual_bp import ...``).
"""

import warnings

from manual_bp.models.parameters import StackParameters

warnings.warn(
    "manual_bp.sequential_parameters is deprecated: import from manual_bp.models.parameters",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["StackParameters"]
