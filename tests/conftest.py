"""Hypothesis profiles: ``dev`` (fast, random), ``ci`` (derandomized, more examples),
``mutation`` (ci's examples without shrinking, for the mutation subprocesses) and
``stress`` (1000 random examples a test, for hunting rare failures).

Choose with ``HYPOTHESIS_PROFILE=dev|ci|stress``; the default is ``ci`` when the
``CI`` environment variable is set, else ``dev``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "dev",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "mutation",  # tests/test_mutations.py's subprocesses: ci's examples, no shrinking —
    # a broken equation only has to fail; shrinking its example costs minutes, not evidence
    max_examples=100,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "stress",
    max_examples=1000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_configure(config):
    """Under pytest-xdist each worker shares the cores with the others: torch's oracle runs
    on one intra-op thread there. Its OpenMP threads spin-wait between parallel regions, so
    two workers with two torch threads each ran the quick verification's checks 4× slower
    than one thread each (measured: 18.5 s against 4.4 s a worker for the same 12 checks;
    OpenBLAS's threads and manual_bp's own row threads made no such difference, and keep
    their defaults so the threaded paths stay exercised)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _numpy_errors_raise():
    """Overflow / invalid operations inside manual_bp are bugs unless explicitly silenced."""
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        yield


@pytest.fixture(scope="session")
def torch_module_outcomes():
    """``reference.torch_modules.outcomes()``, walked once a session (~2 200 configurations
    of torch's own module tests): the ledger tests and the quick verification's report
    read the same walk instead of each playing it."""
    import warnings

    from reference import torch_modules

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch_modules.outcomes()


def pytest_collection_modifyitems(items):
    """Under ``pytest -n 2 --dist loadgroup`` (the README's test command) the tests reading
    :func:`torch_module_outcomes` share one worker, so the walk is played once, not per
    worker; every other test is spread over the workers. The longest tests are collected
    first — that group, then the tests marked ``long_first`` (the quick verification's
    shards, ~1.5 CPU minutes each) — so
    the workers start on them and the many short tests fill in behind, instead of one
    long test running alone at the end."""
    walk = [item for item in items if "torch_module_outcomes" in getattr(item, "fixturenames", ())]
    for item in walk:
        item.add_marker(pytest.mark.xdist_group("torch_module_walk"))
    chosen = {id(item) for item in walk}
    shards = [item for item in items if item.get_closest_marker("long_first")]
    chosen |= {id(item) for item in shards}
    items[:] = walk + shards + [item for item in items if id(item) not in chosen]
