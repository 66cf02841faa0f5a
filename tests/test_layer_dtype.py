"""torch's ``device=``/``dtype=`` constructor keywords, checked in one place (issue 23)."""

import numpy as np
import pytest
import torch

from manual_bp.layers.base import layer_dtype


@pytest.mark.parametrize(
    "given, expected",
    [
        (None, np.float64),
        (np.float32, np.float32),
        (np.dtype(np.float64), np.float64),
        ("float32", np.float32),
        (torch.float32, np.float32),
        (torch.float64, np.float64),
    ],
)
def test_every_accepted_dtype_form(given, expected):
    assert layer_dtype(given, "Linear(3, 2)") == np.dtype(expected)


@pytest.mark.parametrize("given", [np.int32, "int64", torch.int64, torch.float16, "x", object])
def test_other_dtypes_refused_in_one_line(given):
    with pytest.raises(ValueError, match=r"^Linear\(3, 2\): dtype must be float32 or float64"):
        layer_dtype(given, "Linear(3, 2)")


@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
def test_cpu_device_accepted(device):
    assert layer_dtype(np.float32, "X", device) == np.float32


@pytest.mark.parametrize("device", ["cuda", "meta", torch.device("meta")])
def test_other_devices_refused_in_one_line(device):
    with pytest.raises(ValueError, match=r"^X: device=.* has no meaning here"):
        layer_dtype(None, "X", device)
