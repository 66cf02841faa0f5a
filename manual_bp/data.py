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
import hashlib
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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

#: IDX magic numbers: 0x0000 0803 (ubyte, 3 dims) and 0x0000 0801 (ubyte, 1 dim).
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

MNIST_TRAIN_COUNT = 60_000
MNIST_TEST_COUNT = 10_000
MNIST_VALIDATION_COUNT = 10_000  # Nielsen: the last 10 000 training images
MNIST_SHAPE = (28, 28)


class DatasetError(ValueError):
    """A data file is missing, truncated, corrupt or inconsistent."""


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
    paths = {key: _find_file(directory, stem) for key, stem in MNIST_FILES.items()}
    if verify_checksums:
        verify_file_checksums(directory, list(paths.values()))
    n_train_file, n_test_file = counts if counts is not None else (None, None)
    train_x = _read_images(paths["train_images"], n_train_file)
    train_y = _read_labels(paths["train_labels"], train_x.shape[0], paths["train_images"])
    test_x = _read_images(paths["test_images"], n_test_file)
    test_y = _read_labels(paths["test_labels"], test_x.shape[0], paths["test_images"])
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


def _find_file(directory: Path, stem: str) -> Path:
    candidates = (directory / f"{stem}.gz", directory / stem)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    for candidate in candidates:
        if candidate.exists():
            kind = "a directory" if candidate.is_dir() else "not a regular file"
            raise DatasetError(f"{candidate}: is {kind}, not an MNIST IDX file")
    raise DatasetError(f"{directory / stem}[.gz]: MNIST file is missing")


#: What each magic number means, for messages naming a file of the wrong role.
ROLES = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}


def read_idx(path: str | os.PathLike[str], *, magic: int | None = None) -> np.ndarray:
    """The ``uint8`` array stored in an IDX file (gzipped if the name ends in ``.gz``).

    Header: two zero bytes, type code ``0x08`` (unsigned byte), the number of
    dimensions, then each dimension as a big-endian 32-bit integer. With ``magic``
    (:data:`IMAGES_MAGIC` or :data:`LABELS_MAGIC`) a file of the other role is refused
    as such — before its length is compared with its header.
    """
    path = Path(path)
    data = _read_bytes(path)
    if not data:
        raise DatasetError(f"{path}: empty file, not an IDX file")
    if len(data) < 4:
        raise DatasetError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    found = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        hint = ""
        if data[:2] == b"\x1f\x8b":
            hint = " (the file is gzip-compressed: name it .gz)"
        raise DatasetError(
            f"{path}: bad IDX magic number {found} (0x{found:08x}); expected "
            f"{LABELS_MAGIC} for labels or {IMAGES_MAGIC} for images{hint}"
        )
    if magic is not None and found != magic:
        what = ROLES.get(found, f"a {data[3]}-dimensional array")
        raise DatasetError(
            f"{path}: holds {what} (IDX magic {found}), expected {ROLES[magic]} "
            f"(magic {magic}); files swapped or misnamed?"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)
    if len(data) < expected:
        raise DatasetError(
            f"{path}: truncated: header declares shape {shape} ({expected} bytes) "
            f"but the file has {len(data)} bytes"
        )
    if len(data) > expected:
        raise DatasetError(
            f"{path}: {len(data) - expected} unexpected trailing bytes after the "
            f"shape {shape} declared in the header"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file is missing") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a directory, not an IDX file") from None
    except PermissionError:
        raise DatasetError(f"{path}: permission denied") from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({error.strerror or error})") from None
    if path.suffix != ".gz":
        return raw
    if not raw:
        raise DatasetError(f"{path}: empty file, not gzip data")
    if raw[:2] != b"\x1f\x8b":
        hint = " (it is a raw IDX file: drop the .gz)" if raw[:3] == b"\0\0\x08" else ""
        raise DatasetError(f"{path}: not gzip data{hint}")
    try:
        return gzip.decompress(raw)
    except (gzip.BadGzipFile, EOFError, OSError, zlib.error) as error:
        raise DatasetError(f"{path}: corrupt or truncated gzip data ({error})") from None


def _read_images(path: Path, count: int | None) -> np.ndarray:
    images = read_idx(path, magic=IMAGES_MAGIC)
    if images.ndim != 3:
        raise DatasetError(
            f"{path}: expected an image file (magic {IMAGES_MAGIC}, 3 dimensions), "
            f"got {images.ndim} dimension(s) {images.shape}"
        )
    if count is not None and images.shape[0] != count:
        raise DatasetError(
            f"{path}: expected {count} images, the header declares {images.shape[0]}"
        )
    if images.shape[1:] != MNIST_SHAPE:
        raise DatasetError(
            f"{path}: expected 28×28 images, got {images.shape[1]}×{images.shape[2]}"
        )
    return images


def _read_labels(path: Path, count: int, images_path: Path) -> np.ndarray:
    labels = read_idx(path, magic=LABELS_MAGIC)
    if labels.ndim != 1:
        raise DatasetError(
            f"{path}: expected a label file (magic {LABELS_MAGIC}, 1 dimension), "
            f"got {labels.ndim} dimensions {labels.shape}"
        )
    if labels.shape[0] != count:
        raise DatasetError(
            f"{path}: {labels.shape[0]} labels but {images_path.name} has {count} images "
            f"(one label per image)"
        )
    if labels.max(initial=0) > 9:
        index = int(np.argmax(labels > 9))
        raise DatasetError(
            f"{path}: label {int(labels[index])} at index {index} is not a digit 0..9"
        )
    return labels.astype(np.int64)


def verify_file_checksums(directory: Path, paths: list[Path]) -> None:
    """Compare ``paths`` with ``directory/MD5SUMS`` (or ``SHA256SUMS``); ``DatasetError`` if not."""
    candidates = [(directory / "MD5SUMS", "md5"), (directory / "SHA256SUMS", "sha256")]
    found = [(path, name) for path, name in candidates if path.is_file()]
    if not found:
        raise DatasetError(
            f"{directory}: no MD5SUMS or SHA256SUMS file to verify checksums against"
        )
    sums_path, algorithm = found[0]
    expected: dict[str, str] = {}
    try:
        text = sums_path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{sums_path}: not a UTF-8 text file of checksums") from None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            expected[parts[1].lstrip("*")] = parts[0].lower()
    for path in paths:
        if path.name not in expected:
            raise DatasetError(f"{path}: not listed in {sums_path}")
        digest = hashlib.new(algorithm, path.read_bytes()).hexdigest()
        if digest != expected[path.name]:
            raise DatasetError(
                f"{path}: {algorithm} checksum {digest} does not match {expected[path.name]} "
                f"listed in {sums_path}"
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
