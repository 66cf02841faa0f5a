"""Data sets: the embedded 8×8 digits and MNIST from its canonical IDX files.

Every loader returns a :class:`Dataset` with inputs scaled to ``[0, 1]`` as
``(n, n_features)`` float rows (batch-major, see ``docs/conventions.md``) and
integer class labels ``(n,)``; :func:`manual_bp.encoding.one_hot` turns labels
into one-hot rows when a cost needs them (``Network`` accepts either).

A missing, truncated or corrupt file raises :class:`DatasetError` naming the
file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from manual_bp.idx_files import (
    DatasetError,
    find_file,
    read_idx,
    read_images,
    read_labels,
    verify_file_checksums,
)

__all__ = [
    "DIGITS_FILE",
    "MNIST_FILES",
    "Dataset",
    "DatasetError",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "read_idx",
]

#: The embedded copy of scikit-learn's 8×8 digits (see ``datasets/README.md``).
DIGITS_FILE = Path(__file__).with_name("datasets") / "digits.csv.gz"

#: Canonical MNIST file stems; each may be present gzipped (``.gz``) or raw.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

MNIST_TRAIN_COUNT = 60_000
MNIST_TEST_COUNT = 10_000
MNIST_VALIDATION_COUNT = 10_000  # Nielsen: the last 10 000 training images


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test splits: ``x_*`` ``(n, n_features)`` in ``[0, 1]``, ``y_*`` ``(n,)``.

    Attributes
    ----------
    x_train, x_val, x_test : (n, n_features) float arrays
    y_train, y_val, y_test : (n,) int64 labels in ``[0, n_classes)``
    name : str
    n_classes : int
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    n_classes: int = 10

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of ``"train"``, ``"validation"`` (or ``"val"``) or ``"test"``."""
        key = {"train": "train", "training": "train", "validation": "val", "val": "val"}.get(
            name, name
        )
        if key not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; valid: train, validation, test")
        return getattr(self, f"x_{key}"), getattr(self, f"y_{key}")

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.y_train)}, validation={len(self.y_val)}, "
            f"test={len(self.y_test)}, features={self.n_features}, classes={self.n_classes})"
        )


# ---------------------------------------------------------------------- digits
def load_digits(
    *,
    seed: int = 0,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    dtype: np.dtype | type | str = np.float64,
) -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images), embedded, offline.

    Pixels (integers 0..16) are divided by 16 to lie in ``[0, 1]``. The samples are
    shuffled with ``seed`` and split into train / validation / test (the default
    split, seed 0, is the one documented in ``docs/data.md``: 1079 / 359 / 359).

    Parameters
    ----------
    seed : int
        Seed of the shuffle that defines the split.
    validation_fraction, test_fraction : float
        Fractions of the 1797 samples held out (each rounded down to whole samples).
    dtype : float32 or float64

    Returns
    -------
    Dataset
        ``x_*`` ``(n, 64)``, ``y_*`` ``(n,)``.
    """
    fractions = {"validation_fraction": validation_fraction, "test_fraction": test_fraction}
    for name, value in fractions.items():
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    if validation_fraction + test_fraction >= 1:
        raise ValueError("validation_fraction + test_fraction must leave some training data")
    pixels, labels = _read_digits_file(DIGITS_FILE)
    n = labels.shape[0]
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = int(n * validation_fraction), int(n * test_fraction)
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    x = (pixels / 16.0).astype(_float_dtype(dtype))
    return Dataset(x[train], labels[train], x[val], labels[val], x[test], labels[test], "digits")


def _read_digits_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels (1797, 64) int, labels (1797,))`` from the embedded CSV (64 pixels, label)."""
    try:
        with gzip.open(path, "rt", encoding="ascii") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.int64, comments="#")
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: embedded digits file is missing (reinstall manual-bp)"
        ) from None
    except (OSError, EOFError, ValueError) as error:
        raise DatasetError(f"{path}: embedded digits file is corrupt ({error})") from None
    if table.ndim != 2 or table.shape[1] != 65:
        raise DatasetError(f"{path}: expected rows of 64 pixels and a label, got {table.shape}")
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > 16 or labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"{path}: pixel values must be 0..16 and labels 0..9")
    return pixels, labels


# ---------------------------------------------------------------------- MNIST
#: Environment variable naming the MNIST directory (benchmarks, scripts and the CLI's
#: ``--mnist`` without an argument fall back to it, then to ``../shared/data/mnist``).
MNIST_ENV = "MANUAL_BP_MNIST_DIR"


def default_mnist_dir() -> Path:
    """``$MANUAL_BP_MNIST_DIR``, else ``../shared/data/mnist`` relative to the project root."""
    configured = os.environ.get(MNIST_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"


def load_mnist(
    directory: str | os.PathLike[str],
    *,
    verify_checksums: bool = False,
    dtype: np.dtype | type | str = np.float64,
    counts: tuple[int, int] | None = (MNIST_TRAIN_COUNT, MNIST_TEST_COUNT),
    validation_size: int = MNIST_VALIDATION_COUNT,
) -> Dataset:
    """MNIST from the four canonical IDX files, with Nielsen's split.

    Training: the first 50 000 images of ``train-images-idx3-ubyte``; validation:
    its last 10 000; test: the 10 000 ``t10k`` images. Each file may be gzipped
    (``<name>.gz``, preferred when both exist) or raw. Pixels ``0..255`` are divided
    by 255.

    Checked for every file: IDX magic number (2051 images, 2049 labels), the
    declared counts (60 000 / 10 000) and image size 28×28, that the payload length
    matches the header exactly (no truncation, no trailing bytes), labels in
    ``0..9``, and that images and labels agree in number. With
    ``verify_checksums=True`` each file is also hashed and compared with the
    ``MD5SUMS`` (or ``SHA256SUMS``) file in ``directory`` — the checksums of the
    files as they are on disk (a recompressed ``.gz`` has its own checksums,
    different from those published with the original files).

    Parameters
    ----------
    directory : path
    verify_checksums : bool
    dtype : float32 or float64
    counts : (n_train_file, n_test_file) or None
        Expected numbers of images in the training and t10k files; ``None`` accepts
        any (subsets, tests).
    validation_size : int
        Images taken from the end of the training file for validation.

    Returns
    -------
    Dataset
        ``x_*`` ``(n, 784)`` in ``[0, 1]``, ``y_*`` ``(n,)`` int64.

    Raises
    ------
    DatasetError
        Naming the file and what is wrong.
    """
    directory = Path(directory)
    if not directory.exists():
        raise DatasetError(f"{directory}: MNIST directory does not exist")
    if not directory.is_dir():
        raise DatasetError(f"{directory}: is a file, not the MNIST directory (give its folder)")
    paths = {key: find_file(directory, stem) for key, stem in MNIST_FILES.items()}
    if verify_checksums:
        verify_file_checksums(directory, list(paths.values()))
    n_train_file, n_test_file = counts if counts is not None else (None, None)
    train_x = read_images(paths["train_images"], n_train_file)
    train_y = read_labels(paths["train_labels"], train_x.shape[0], paths["train_images"])
    test_x = read_images(paths["test_images"], n_test_file)
    test_y = read_labels(paths["test_labels"], test_x.shape[0], paths["test_images"])
    if not 0 <= validation_size < train_x.shape[0]:
        raise ValueError(
            f"validation_size {validation_size} must leave training images "
            f"(the training file has {train_x.shape[0]})"
        )
    dtype = _float_dtype(dtype)
    n_train = train_x.shape[0] - validation_size
    x_train = train_x.reshape(train_x.shape[0], -1).astype(dtype) / dtype.type(255)
    x_test = test_x.reshape(test_x.shape[0], -1).astype(dtype) / dtype.type(255)
    return Dataset(
        x_train[:n_train],
        train_y[:n_train],
        x_train[n_train:],
        train_y[n_train:],
        x_test,
        test_y,
        "mnist",
    )


# ---------------------------------------------------------------------- helpers
def load_dataset(
    name: str = "digits",
    *,
    directory: str | os.PathLike[str] | None = None,
    seed: int = 0,
    dtype: np.dtype | type | str = np.float64,
) -> Dataset:
    """``"digits"`` (embedded) or ``"mnist"`` (from ``directory``) by name."""
    key = name.strip().lower()
    if key == "digits":
        return load_digits(seed=seed, dtype=dtype)
    if key == "mnist":
        if directory is None:
            raise ValueError("the mnist data set needs a directory holding its IDX files")
        return load_mnist(directory, dtype=dtype)
    raise ValueError(f"unknown data set {name!r}; valid names: digits, mnist")


def _float_dtype(dtype: np.dtype | type | str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype
