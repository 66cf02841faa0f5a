"""Deprecated: moved to :mod:`manual_bp.models.targets` (the one-model layout, ``manual_bp.models``).

Kept so that ``import manual_bp.sequential_targets`` keeps working; it will be removed in a later
release. Import from ``manual_bp.models.targets`` (or the top level, ``from manual_bp import ...``).
"""

import warnings

from manual_bp.models.targets import *  # noqa: F403

warnings.warn(
    "manual_bp.sequential_targets is deprecated: import from manual_bp.models.targets (or manual_bp)",
    DeprecationWarning,
    stacklevel=2,
)
