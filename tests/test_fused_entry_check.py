"""``FusedTrainer.step``'s entry check is skipped for data of the types, dtypes and shapes it
last passed (issue 22: ~4 µs of Nielsen's ~35 µs step). The check looks at nothing else
(issue 24), so the skip must never let through what the check refuses: every hostile kind
after a valid step is still refused in one line naming the argument, before any update."""

from __future__ import annotations

import numpy as np
import pytest

from manual_bp import Network
from manual_bp.optimizers import SGD
from manual_bp.training import FusedTrainer
from tests.test_hostile_fast_steps import _expect_refusal, _valid

HOSTILE = {
    "complex x": lambda x, y: (x.astype(complex), y, "x"),
    "float32 x": lambda x, y: (x.astype(np.float32), y, "x"),
    "x of another width": lambda x, y: (np.concatenate([x, x[:, :1]], axis=1), y, "x"),
    "labels y": lambda x, y: (x, y.argmax(axis=1), "y"),
    "y of one row more": lambda x, y: (x, np.concatenate([y, y[:1]]), "y"),
    "float32 y": lambda x, y: (x, y.astype(np.float32), "y"),
    "x as a list": lambda x, y: (x.tolist(), y, "x"),
}


@pytest.mark.parametrize("how", sorted(HOSTILE))
def test_hostile_data_after_a_checked_step_is_still_refused(how):
    model = Network([3, 4, 2], seed=0)
    x, y = _valid(model, 4, np.random.default_rng(0))
    trainer = FusedTrainer(model, SGD(lr=0.1), n_train=4)
    trainer.step(x, y)  # checked and remembered
    trainer.step(x.copy(), y.copy())  # other arrays of the same kind: passes unchecked
    bad_x, bad_y, name = HOSTILE[how](x, y)
    before = model.flat_parameters.copy()
    _expect_refusal(lambda: trainer.step(bad_x, bad_y), (name,))
    np.testing.assert_array_equal(model.flat_parameters, before)
    trainer.step(x, y)  # and valid data passes again after the refusal


def test_index_is_checked_at_every_step():
    model = Network([3, 4, 2], seed=0)
    x, y = _valid(model, 4, np.random.default_rng(0))
    trainer = FusedTrainer(model, SGD(lr=0.1), n_train=4)
    trainer.step(x, y, np.array([0, 3]))  # the last row: accepted
    trainer.step(x, y)
    _expect_refusal(lambda: trainer.step(x, y, np.array([0, 4])), ("index",))


def test_skipping_the_check_changes_no_result():
    """Checked and unchecked steps run the same arithmetic: the same bits."""
    x, y = _valid(Network([3, 4, 2], seed=0), 4, np.random.default_rng(1))
    models = [Network([3, 4, 2], seed=0) for _ in range(2)]
    trainers = [FusedTrainer(m, SGD(lr=0.1), n_train=4) for m in models]
    for _ in range(3):
        trainers[0].step(x, y)
        trainers[0]._checked = None  # forget: every step checked again
        trainers[1].step(x, y)
    np.testing.assert_array_equal(models[0].flat_parameters, models[1].flat_parameters)
