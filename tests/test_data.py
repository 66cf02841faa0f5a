"""Data loaders: embedded digits, MNIST IDX files (valid, gzipped, raw and broken)."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from manual_bp.data import (
    MNIST_FILES,
    Dataset,
    DatasetError,
    load_dataset,
    load_digits,
    load_mnist,
    read_idx,
)

REPO = Path(__file__).resolve().parents[1]


def mnist_dir() -> Path:
    """``$MANUAL_BP_MNIST_DIR``, else ``<repo>/../shared/data/mnist`` (CI layout)."""
    env = os.environ.get("MANUAL_BP_MNIST_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "mnist"


# ---------------------------------------------------------------------- IDX builders
def idx_bytes(array: np.ndarray, magic: int | None = None, shape=None) -> bytes:
    """An IDX file: magic (0x0000 08 ndim), big-endian dims, then the uint8 payload."""
    array = np.asarray(array, dtype=np.uint8)
    shape = array.shape if shape is None else shape
    magic = (0x08 << 8 | len(shape)) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{len(shape)}I", *shape) + array.tobytes()


def write(path: Path, data: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


def make_mnist(
    directory: Path, *, n_train: int = 12, n_test: int = 5, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """Four small, valid MNIST-format files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays["train_images"][0, 0, 0] = 255  # the scaling must map 255 to exactly 1
    for key, stem in MNIST_FILES.items():
        write(directory / stem, idx_bytes(arrays[key]), gz)
    return arrays


def replace_file(directory: Path, key: str, data: bytes) -> Path:
    """Overwrite one of the four files (whichever of .gz/raw exists) with ``data``."""
    stem = MNIST_FILES[key]
    gz = (directory / f"{stem}.gz").exists()
    return write(directory / stem, data, gz)


def small(directory: Path, **kwargs) -> Dataset:
    return load_mnist(directory, counts=None, validation_size=4, **kwargs)


# ---------------------------------------------------------------------- digits
def test_digits_split_scaled_and_fixed():
    data = load_digits()
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (1079, 359, 359)
    for x, y in (data.split("train"), data.split("validation"), data.split("test")):
        assert x.shape == (len(y), 64) and x.dtype == np.float64
        assert x.min() >= 0 and x.max() <= 1
        assert y.dtype == np.int64 and set(np.unique(y)) <= set(range(10))
    assert data.x_train.max() == 1.0  # 16/16: scaled by the right constant
    again = load_digits()
    np.testing.assert_array_equal(data.x_test, again.x_test)
    np.testing.assert_array_equal(data.y_train, again.y_train)
    # The three splits partition the 1797 images (no sample in two splits).
    rows = np.concatenate([data.x_train, data.x_val, data.x_test])
    assert rows.shape[0] == 1797


def test_digits_matches_scikit_learn():
    datasets = pytest.importorskip("sklearn.datasets")
    reference = datasets.load_digits()
    data = load_digits(validation_fraction=0.0, test_fraction=0.0)
    order = np.lexsort(np.column_stack([data.x_train * 16, data.y_train]).T)
    ref_order = np.lexsort(np.column_stack([reference.data, reference.target]).T)
    np.testing.assert_array_equal(data.x_train[order] * 16, reference.data[ref_order])
    np.testing.assert_array_equal(data.y_train[order], reference.target[ref_order])


def test_digits_float32_and_bad_options():
    assert load_digits(dtype="float32").x_train.dtype == np.float32
    with pytest.raises(ValueError, match=r"test_fraction"):
        load_digits(test_fraction=1.5)
    with pytest.raises(ValueError, match=r"float32 or float64"):
        load_digits(dtype="int32")
    with pytest.raises(ValueError, match=r"unknown split"):
        load_digits().split("dev")
    with pytest.raises(ValueError, match=r"valid names: digits, mnist"):
        load_dataset("cifar")


def test_digits_runtime_does_not_need_sklearn():
    import manual_bp.data as module

    source = Path(module.__file__).read_text()
    assert "sklearn" not in source.split('"""', 2)[2]  # only the docstring may mention it


# ---------------------------------------------------------------------- MNIST: valid files
@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_mnist_small_files_round_trip(tmp_path, gz):
    arrays = make_mnist(tmp_path, gz=gz)
    data = small(tmp_path)
    assert data.x_train.shape == (8, 784) and data.x_val.shape == (4, 784)
    assert data.x_test.shape == (5, 784)
    flat = arrays["train_images"].reshape(12, 784) / 255.0
    np.testing.assert_array_equal(data.x_train, flat[:8])  # first images train ...
    np.testing.assert_array_equal(data.x_val, flat[8:])  # ... the last ones validate
    np.testing.assert_array_equal(data.y_train, arrays["train_labels"][:8])
    np.testing.assert_array_equal(data.y_val, arrays["train_labels"][8:])
    np.testing.assert_array_equal(data.y_test, arrays["test_labels"])
    assert data.x_train.max() == 1.0 and data.x_train.min() >= 0.0
    assert data.y_train.dtype == np.int64
    assert small(tmp_path, dtype=np.float32).x_test.dtype == np.float32


def test_read_idx_reads_header_and_payload(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write(tmp_path / "a-idx3-ubyte", idx_bytes(array), gz=False)
    np.testing.assert_array_equal(read_idx(path), array)
    assert int.from_bytes(path.read_bytes()[:4], "big") == 2051  # images magic
    labels = write(tmp_path / "l-idx1-ubyte", idx_bytes(np.arange(5)), gz=True)
    with gzip.open(labels) as handle:
        assert int.from_bytes(handle.read(4), "big") == 2049  # labels magic
    np.testing.assert_array_equal(read_idx(labels), np.arange(5))


def test_mnist_default_counts_are_enforced(tmp_path):
    make_mnist(tmp_path)
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz: expected 60000 images"):
        load_mnist(tmp_path)


# ---------------------------------------------------------------------- MNIST: broken files
def test_mnist_missing_directory_and_file(tmp_path):
    with pytest.raises(DatasetError, match=r"directory does not exist"):
        load_mnist(tmp_path / "nowhere")
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        DatasetError, match=r"t10k-labels-idx1-ubyte\[\.gz\]: MNIST file is missing"
    ):
        small(tmp_path)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_mnist_bad_magic(tmp_path, gz):
    arrays = make_mnist(tmp_path, gz=gz)
    replace_file(tmp_path, "train_images", idx_bytes(arrays["train_images"], magic=0x12345678))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.*bad IDX magic number"):
        small(tmp_path)


def test_mnist_labels_file_in_place_of_images(tmp_path):
    arrays = make_mnist(tmp_path)
    replace_file(tmp_path, "test_images", idx_bytes(arrays["test_labels"]))
    with pytest.raises(
        DatasetError, match=r"t10k-images.*holds labels \(IDX magic 2049\), expected images"
    ):
        small(tmp_path)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_mnist_truncated_payload(tmp_path, gz):
    arrays = make_mnist(tmp_path, gz=gz)
    data = idx_bytes(arrays["train_images"])[:-100]
    replace_file(tmp_path, "train_images", data)
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.*truncated"):
        small(tmp_path)


def test_mnist_truncated_gzip_stream(tmp_path):
    make_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(
        DatasetError, match=r"t10k-images-idx3-ubyte\.gz: corrupt or truncated gzip"
    ):
        small(tmp_path)


def test_mnist_not_gzip_at_all(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip data")
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte.gz: not gzip data"):
        small(tmp_path)


def test_mnist_trailing_bytes(tmp_path):
    arrays = make_mnist(tmp_path)
    replace_file(tmp_path, "test_labels", idx_bytes(arrays["test_labels"]) + b"\0\0")
    with pytest.raises(DatasetError, match=r"t10k-labels.*2 unexpected trailing bytes"):
        small(tmp_path)


def test_mnist_wrong_count_declared(tmp_path):
    make_mnist(tmp_path)
    with pytest.raises(DatasetError, match=r"expected 13 images, the header declares 12"):
        load_mnist(tmp_path, counts=(13, 5), validation_size=4)


def test_mnist_images_and_labels_disagree(tmp_path):
    arrays = make_mnist(tmp_path)
    replace_file(tmp_path, "train_labels", idx_bytes(arrays["train_labels"][:-1]))
    with pytest.raises(DatasetError, match=r"train-labels.*11 labels but .* has 12 images"):
        small(tmp_path)


def test_mnist_wrong_image_size(tmp_path):
    make_mnist(tmp_path)
    replace_file(tmp_path, "test_images", idx_bytes(np.zeros((5, 27, 28))))
    with pytest.raises(DatasetError, match=r"t10k-images.*expected 28×28 images, got 27×28"):
        small(tmp_path)


def test_mnist_label_out_of_range(tmp_path):
    arrays = make_mnist(tmp_path)
    labels = arrays["test_labels"].copy()
    labels[3] = 10
    replace_file(tmp_path, "test_labels", idx_bytes(labels))
    with pytest.raises(DatasetError, match=r"t10k-labels.*label 10 at index 3 is not a digit"):
        small(tmp_path)


def test_mnist_checksums(tmp_path):
    make_mnist(tmp_path)
    with pytest.raises(DatasetError, match=r"no MD5SUMS or SHA256SUMS"):
        small(tmp_path, verify_checksums=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    lines = [f"{hashlib.md5((tmp_path / n).read_bytes()).hexdigest()}  {n}" for n in names]
    (tmp_path / "MD5SUMS").write_text("\n".join(lines) + "\n")
    small(tmp_path, verify_checksums=True)  # all match
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the gzip trailer region
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz: md5 checksum .* match"):
        small(tmp_path, verify_checksums=True)


# ---------------------------------------------------------------------- real MNIST
@pytest.mark.slow
def test_real_mnist_files():
    directory = mnist_dir()
    if not directory.is_dir():
        pytest.skip(
            f"real MNIST files not found at {directory} "
            "(set MANUAL_BP_MNIST_DIR or place shared/data/mnist beside the repo)"
        )
    data = load_mnist(directory, verify_checksums=(directory / "MD5SUMS").is_file())
    assert (data.x_train.shape, data.x_val.shape, data.x_test.shape) == (
        (50_000, 784),
        (10_000, 784),
        (10_000, 784),
    )
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    # Well-known facts about MNIST: the first training labels and the class counts.
    np.testing.assert_array_equal(data.y_train[:8], [5, 0, 4, 1, 9, 2, 1, 3])
    np.testing.assert_array_equal(data.y_test[:4], [7, 2, 1, 0])
    assert np.bincount(data.y_test).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


# ---------------------------------------------------------------------- true causes (issue 14)
IDX_CASES = {
    # name: (file bytes, expected role magic, message)
    "images magic in a labels file": (
        idx_bytes(np.zeros((6, 1, 1), np.uint8), magic=2051),
        2049,
        r"holds images \(IDX magic 2051\), expected labels \(magic 2049\)",
    ),
    "labels magic in an images file": (
        idx_bytes(np.zeros(6, np.uint8), magic=2049),
        2051,
        r"holds labels \(IDX magic 2049\), expected images",
    ),
    "a 2-d array where labels belong": (
        idx_bytes(np.zeros((2, 3), np.uint8), magic=2050),
        2049,
        r"holds a 2-dimensional array \(IDX magic 2050\), expected labels",
    ),
    "empty file": (b"", 2049, "empty file, not an IDX file"),
    "gzip data in a raw file": (
        gzip.compress(idx_bytes(np.zeros(3, np.uint8))),
        2049,
        r"bad IDX magic number .* \(the file is gzip-compressed: name it \.gz\)",
    ),
    "header dimensions overflowing int64": (
        struct.pack(">I4I", 0x0804, *([2**32 - 1] * 4)) + b"\0" * 8,
        None,
        r"truncated: header declares shape \(4294967295, 4294967295, 4294967295, 4294967295\)",
    ),
}


class TestIdxTrueCause:
    """read_idx names the true cause: the wrong role before any length check (an images
    header on a labels-sized payload used to read as "truncated"), an empty file, gzip
    data without .gz, header dimensions whose product overflows int64."""

    @pytest.mark.parametrize("case", list(IDX_CASES))
    def test_message(self, tmp_path, case):
        data, magic, message = IDX_CASES[case]
        path = tmp_path / "t10k-labels-idx1-ubyte"
        path.write_bytes(data)
        with pytest.raises(DatasetError, match=message) as info:
            read_idx(path, magic=magic)
        assert str(info.value).startswith(str(path))
        if "magic" in case or "array" in case:  # the role, not a length, is at fault
            assert "truncated" not in str(info.value)

    def test_directory_and_raw_data_named_gz(self, tmp_path):
        (tmp_path / "x.gz").mkdir()
        with pytest.raises(DatasetError, match=r"x\.gz: is a directory, not an IDX file"):
            read_idx(tmp_path / "x.gz")
        raw = tmp_path / "y.gz"
        raw.write_bytes(idx_bytes(np.zeros(3, np.uint8)))
        with pytest.raises(DatasetError, match=r"y\.gz: not gzip data \(it is a raw IDX file"):
            read_idx(raw)

    def test_mnist_path_that_is_a_file_or_holds_a_directory(self, tmp_path):
        make_mnist(tmp_path)
        labels = tmp_path / "train-labels-idx1-ubyte.gz"
        with pytest.raises(DatasetError, match="is a file, not the MNIST directory"):
            load_mnist(labels)
        labels.unlink()
        labels.mkdir()
        with pytest.raises(DatasetError, match=r"labels-idx1-ubyte\.gz: is a directory, not an"):
            small(tmp_path)

    def test_checksum_file_not_utf8(self, tmp_path):
        make_mnist(tmp_path)
        (tmp_path / "MD5SUMS").write_bytes(b"\xff\xfe not text")
        with pytest.raises(DatasetError, match=r"MD5SUMS: not a UTF-8 text file of checksums"):
            small(tmp_path, verify_checksums=True)
