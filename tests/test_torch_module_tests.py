"""torch's own module test configurations as the oracle (``reference/torch_modules.py``).

Every configuration of ``module_db`` and ``common_nn`` of a module class the library has
(looked up by torch's class name, built from torch's exact arguments) is played; the ones
that do not agree yet are listed in ``tests/data/torch_module_ledger.json`` with their
outcome. The ledger must match exactly: a new refusal, crash or disagreement fails, and so
does an entry that now agrees (remove it: the ledger only shrinks). Regenerate with
``python -m reference.torch_modules --ledger tests/data/torch_module_ledger.json`` after
reading the difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reference import torch_modules  # torch.testing._internal needs expecttest (test extra)

LEDGER = Path(__file__).parent / "data" / "torch_module_ledger.json"


@pytest.fixture(scope="module")
def found(torch_module_outcomes):
    return torch_module_outcomes  # the session's one walk (tests/conftest.py)


def test_every_agreeing_configuration_agrees_to_float64_rounding(found):
    agreeing = [o for o in found.values() if o.status == "agree"]
    assert agreeing, "no configuration agrees: the walk is broken"
    assert max(o.error for o in agreeing) <= torch_modules.TOLERANCE
    # each agreement compared an output and at least one gradient
    assert all("output" in o.compared and len(o.compared) >= 2 for o in agreeing)


def test_nothing_crashes_or_disagrees_outside_the_ledger(found):
    expected = json.loads(LEDGER.read_text(encoding="utf-8"))
    now = torch_modules.ledger(found)
    new = {k: v for k, v in now.items() if expected.get(k, {}).get("status") != v["status"]}
    fixed = sorted(k for k in expected if k not in now)
    assert not new, f"{len(new)} configurations got worse or are new: " + "; ".join(
        f"{k}: {v['status']} ({v['detail']})" for k, v in list(new.items())[:10]
    )
    assert not fixed, f"{len(fixed)} ledger entries agree now; remove them: {fixed[:10]}"


def test_the_ledger_has_no_crash(found):
    """A crash (an exception from NumPy's internals, or of an unexpected kind) is never an
    accepted outcome: the library refuses what it does not support, in its own words."""
    crashes = {k: o.detail for k, o in found.items() if o.status == "crash"}
    assert not crashes, crashes


def test_exclusions_are_only_what_has_no_meaning_here(found):
    """The exclusion table holds device, sparse or quantised configurations only, each with
    its explanation, and names configurations that exist."""
    for key, (reason, why) in torch_modules.EXCLUDED.items():
        assert reason in torch_modules.EXCLUSION_REASONS and why, key
        assert found.get(key) is not None and found[key].status == "excluded", key


def test_summary_counts_every_configuration(found):
    summary = torch_modules.summary(found)
    outcomes = ("agree", "disagree", "refused", "crash", "excluded")
    assert sum(summary[o] for o in outcomes) == summary["configurations"] == len(found)
    assert sum(sum(c.values()) for c in summary["by_class"].values()) == len(found)
