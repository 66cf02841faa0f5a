"""The ``verify`` checks of reference/checks_blindspots.py pass, and are what verify runs.

Same ground as tests/test_blindspots_components.py and test_blindspots_fast.py
(cost target forms, L1 at w = 0, the fast path under every option), so a user
citing the ``verify`` report cites these too.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference.checks import CHECKS, _load_check_modules

_load_check_modules()
NAMES = ("cost-target-forms", "regularizer-l1-at-zero", "fast-path-options")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", range(4))
def test_blindspot_checks_pass(name, seed):
    comparisons = CHECKS[name](np.random.default_rng(seed))
    assert comparisons or name == "fast-path-options"
    for comparison in comparisons:
        comparison.check()


def test_checks_are_tagged_with_catalogue_ids():
    from manual_bp.equations import EQUATIONS

    known = set(EQUATIONS)
    for name in NAMES:
        for seed in range(3):
            for comparison in CHECKS[name](np.random.default_rng(seed)):
                assert comparison.equation in known, comparison.equation
