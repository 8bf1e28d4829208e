"""lib.reference: the plaintext reference check (demo and QA only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lib.reference import ReferenceUnavailable, load_reference_model, reference_check


def test_reference_check(tmp_path: Path) -> None:
    with pytest.raises(ReferenceUnavailable):
        load_reference_model(tmp_path / "missing.npz")
    coef = np.zeros((10, 784))
    coef[3] = 1.0
    np.savez(tmp_path / "m.npz", coef=coef, intercept=np.zeros(10))
    model = load_reference_model(tmp_path / "m.npz")
    pixels = np.full(784, 0.5)
    check = reference_check(model, pixels, model.scores(pixels) + 1e-6, "ckks")
    assert check.agrees and check.plain_label == 3 and check.max_abs_error == pytest.approx(1e-6)
    assert not reference_check(model, pixels, np.eye(10)[5] * 1e4, "ckks").agrees
    # without a network beside the linear model, the network scheme has no reference ...
    with pytest.raises(ReferenceUnavailable, match="network"):
        reference_check(model, pixels, np.zeros(10), "network")
    # ... and with one, the network scheme is checked against the network, the others against the linear model
    w1 = np.zeros((4, 784))
    w1[2, :] = 1.0
    w2 = np.zeros((10, 4))
    w2[7, 2] = 1.0
    np.savez(tmp_path / "mnist_network.npz", w1=w1, b1=np.zeros(4), w2=w2, b2=np.zeros(10))
    np.savez(tmp_path / "m.npz", coef=coef, intercept=np.ones(10))  # a new file: the cache reloads
    both = load_reference_model(tmp_path / "m.npz")
    assert reference_check(both, pixels, np.eye(10)[7], "network").plain_label == 7  # (784 * 0.5) ** 2 in class 7
    assert reference_check(both, pixels, np.eye(10)[3], "bfv").plain_label == 3
