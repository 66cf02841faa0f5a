"""Deprecated: ``manual_bp.sequential_targets`` moved into :mod:`manual_bp.models` (one model).

Kept so that ``import manual_bp.sequential_targets`` keeps working; it will be removed in a later
release. Import from :mod:`manual_bp.models` or the top level (``from manual_bp import ...``).
"""

import warnings

from manual_bp.models.targets import *  # noqa: F403

warnings.warn(
    "manual_bp.sequential_targets is deprecated: import from manual_bp.models.targets",
    DeprecationWarning,
    stacklevel=2,
)
