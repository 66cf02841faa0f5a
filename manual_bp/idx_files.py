"""MNIST's IDX files: finding, reading and checking them (for :mod:`manual_bp.data`).

An IDX file (LeCun's format) is a 4-byte magic number — two zero bytes, the type code
``0x08`` (unsigned byte), the number of dimensions — each dimension as a big-endian 32-bit
integer, then the bytes. Every fault (missing, empty, truncated, gzip not named ``.gz``,
a file of the other role, counts that disagree, a checksum mismatch) is one
:class:`DatasetError` naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "DatasetError",
    "find_file",
    "read_idx",
    "read_images",
    "read_labels",
    "verify_file_checksums",
]

#: IDX magic numbers: 0x0000 0803 (ubyte, 3 dims) and 0x0000 0801 (ubyte, 1 dim).
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
#: The shape of one MNIST image.
MNIST_SHAPE = (28, 28)


class DatasetError(ValueError):
    """A data file is missing, truncated, corrupt or inconsistent."""


def find_file(directory: Path, stem: str) -> Path:
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


def read_images(path: Path, count: int | None) -> np.ndarray:
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


def read_labels(path: Path, count: int, images_path: Path) -> np.ndarray:
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
