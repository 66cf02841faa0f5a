"""Options of the data helpers (issue 15): split fractions, seeds, dtype, validation size.

The oracle for the digits split is its definition: the full set (fractions 0, 0)
permuted by ``np.random.default_rng(seed).permutation`` and cut into
``int(n·f_test)`` test, ``int(n·f_val)`` validation and the rest training rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_bp.data import load_dataset, load_digits, load_mnist
from tests.test_data import make_mnist

N_DIGITS = 1797
FULL = load_digits(validation_fraction=0.0, test_fraction=0.0)


def _reference_split(seed: int, f_val: float, f_test: float):
    """The definition: the embedded file order permuted by ``seed`` and cut by fractions."""
    order = np.random.default_rng(seed).permutation(N_DIGITS)
    # FULL is itself shuffled by seed 0: undo it to get the file order back.
    file_order = np.empty(N_DIGITS, dtype=int)
    file_order[np.random.default_rng(0).permutation(N_DIGITS)] = np.arange(N_DIGITS)
    x_file, y_file = FULL.x_train[file_order], FULL.y_train[file_order]
    n_val, n_test = int(N_DIGITS * f_val), int(N_DIGITS * f_test)
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return [(x_file[i], y_file[i]) for i in (train, val, test)]


fractions = st.sampled_from([0.0, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.7])


@settings(max_examples=10)
@given(st.integers(0, 2**32 - 1), fractions, fractions)
def test_digits_split_follows_seed_and_fractions(seed, f_val, f_test):
    """Every (seed, fraction) gives exactly the split of the definition, in every dtype."""
    if f_val + f_test >= 1:
        with pytest.raises(ValueError, match="leave some training data"):
            load_digits(seed=seed, validation_fraction=f_val, test_fraction=f_test)
        return
    data = load_digits(seed=seed, validation_fraction=f_val, test_fraction=f_test)
    for (x, y), split in zip(
        _reference_split(seed, f_val, f_test), ("train", "validation", "test"), strict=True
    ):
        got_x, got_y = data.split(split)
        np.testing.assert_array_equal(got_x, x, err_msg=split)
        np.testing.assert_array_equal(got_y, y, err_msg=split)
    single = load_digits(seed=seed, validation_fraction=f_val, test_fraction=f_test, dtype="f4")
    assert single.x_train.dtype == np.float32
    np.testing.assert_array_equal(single.x_val, data.x_val.astype(np.float32))


def test_seed_changes_the_split_and_load_dataset_passes_it_through():
    a, b = load_digits(seed=1), load_digits(seed=2)
    assert not np.array_equal(a.y_test, b.y_test)
    np.testing.assert_array_equal(load_dataset("digits", seed=2).x_test, b.x_test)
    assert load_dataset(" Digits ", seed=2, dtype=np.float32).x_val.dtype == np.float32


@pytest.mark.parametrize(
    ("f_val", "f_test", "ok"),
    [
        (0.0, 0.0, True),
        (0.0, float(np.nextafter(1.0, 0.0)), True),  # just below 1: accepted ...
        (0.0, 1.0, False),  # ... exactly 1: no training data
        (-1e-9, 0.2, False),
        (0.2, -0.1, False),
        (0.5, 0.5, False),  # the sum exactly 1
        (0.4, 0.5, True),
    ],
)
def test_fraction_bounds_at_their_edges(f_val, f_test, ok):
    if ok:
        data = load_digits(validation_fraction=f_val, test_fraction=f_test)
        assert len(data.y_test) == int(N_DIGITS * f_test)
        assert len(data.y_val) == int(N_DIGITS * f_val)
        assert len(data.y_train) + len(data.y_val) + len(data.y_test) == N_DIGITS
    else:
        with pytest.raises(ValueError, match="fraction"):
            load_digits(validation_fraction=f_val, test_fraction=f_test)


@pytest.mark.parametrize("validation_size", [0, 1, 11])
def test_mnist_validation_size_takes_the_last_training_images(tmp_path, validation_size):
    arrays = make_mnist(tmp_path, n_train=12, n_test=3)
    data = load_mnist(tmp_path, counts=None, validation_size=validation_size)
    flat = arrays["train_images"].reshape(12, 784) / 255.0
    n_train = 12 - validation_size
    np.testing.assert_array_equal(data.x_train, flat[:n_train])
    np.testing.assert_array_equal(data.x_val, flat[n_train:])
    np.testing.assert_array_equal(data.y_val, arrays["train_labels"][n_train:])


@pytest.mark.parametrize("validation_size", [-1, 12, 13])
def test_mnist_validation_size_must_leave_training_images(tmp_path, validation_size):
    make_mnist(tmp_path, n_train=12, n_test=3)
    with pytest.raises(ValueError, match=f"validation_size {validation_size}"):
        load_mnist(tmp_path, counts=None, validation_size=validation_size)


def test_mnist_counts_are_checked_when_given(tmp_path):
    make_mnist(tmp_path, n_train=12, n_test=3)
    assert len(load_mnist(tmp_path, counts=(12, 3), validation_size=2).y_test) == 3
    with pytest.raises(Exception, match=r"12|13"):
        load_mnist(tmp_path, counts=(13, 3), validation_size=2)
