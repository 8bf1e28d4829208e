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
    check = reference_check(model, pixels, model.scores(pixels) + 1e-6)
    assert check.agrees and check.plain_label == 3 and check.max_abs_error == pytest.approx(1e-6)
    assert not reference_check(model, pixels, np.eye(10)[5] * 1e4).agrees
