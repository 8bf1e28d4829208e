"""``python -m lib.cli predict``: the command-line path through a real session, for each scheme."""

from __future__ import annotations

from pathlib import Path

import pytest

from lib import cli
from lib.mnist_data import SHARED_TEST_SET, load_test_set


@pytest.mark.integration
@pytest.mark.parametrize("scheme", ["ckks", "bfv"])
def test_predict_a_real_test_digit(scheme: str, app_env, monkeypatch, capsys) -> None:
    if not Path(SHARED_TEST_SET).exists():
        pytest.skip(f"the real MNIST test set is not at {SHARED_TEST_SET}")
    for name, value in app_env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["predict", "--mnist-index", "0", "--repeat", "2", "--scheme", scheme]) == 0
    out = capsys.readouterr().out
    label = int(load_test_set()[1][0])
    assert f"scheme {scheme}, key id" in out
    assert f"true label {label}, predicted {label}: correct" in out
    assert "cold" in out and "warm median" in out


def test_unknown_scheme_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["predict", "--mnist-index", "0", "--scheme", "rsa"])
    assert exited.value.code == 2
    assert "invalid choice: 'rsa'" in capsys.readouterr().err


@pytest.mark.integration
def test_predict_a_held_out_gallery_digit(app_env, monkeypatch, capsys) -> None:
    """What ``scripts.deploy smoke`` runs: a digit that ships with the app, so no data set is needed."""
    from lib.digits import gallery
    from lib.reference import load_reference_model

    for name, value in app_env.items():
        monkeypatch.setenv(name, value)
    images, labels = gallery()
    plain = int(load_reference_model().predict(images[:1])[0])
    assert cli.main(["predict", "--gallery-index", "0", "--scheme", "bfv"]) == 0
    out = capsys.readouterr().out
    assert f"held-out gallery digit #0 (real MNIST, never trained on), true label: {int(labels[0])}" in out
    assert f"predicted {plain}:" in out


def test_a_gallery_index_out_of_range_is_a_clear_error(capsys) -> None:
    assert cli.main(["predict", "--gallery-index", "100000"]) == 2
    assert "There is no test digit #100000" in capsys.readouterr().err
