"""lib.view_models: what the pages say about a scheme and about one classification."""

from __future__ import annotations

import numpy as np
import pytest
from app_fakes import FakeSession

from lib.digits import DigitInput
from lib.schemes import SCHEME_NAMES, SPECS, descriptor
from lib.view_models import (
    HE_STANDARD_MAX_BITS_128,
    Classified,
    error_source,
    public_material,
    scheme_title,
    security_summary,
)


def test_scheme_facts_come_from_the_registry_with_a_fallback_for_unknown_names() -> None:
    for name in SCHEME_NAMES:
        info = SPECS[name]
        assert scheme_title(name) == info.title and name in info.title
        assert error_source(name) == info.error_source
        assert public_material(name) == info.public_material
    assert scheme_title("nope") == "nope"
    assert error_source("nope") == "encryption noise and rounding"
    assert public_material("nope") == "the public keys"


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_security_summary_states_the_parameters_within_the_standard(name: str) -> None:
    params = descriptor(name)["params"]
    n = int(params["poly_modulus_degree"])
    bits = [int(b) for b in params["coeff_modulus_bits"]]
    assert sum(bits) <= HE_STANDARD_MAX_BITS_128[n]  # every scheme is within 128-bit security
    text = security_summary(name)
    assert f"**N = {n:,}**" in text and f"**{sum(bits)}-bit**" in text
    assert " + ".join(map(str, bits)) in text
    assert f"at most {HE_STANDARD_MAX_BITS_128[n]} bits" in text and "128-bit security" in text


@pytest.mark.slow
def test_classified_says_whether_the_prediction_is_right() -> None:
    fake = FakeSession()
    prediction = fake.predict(np.ones(784))

    def classified(true_label: int | None) -> Classified:
        digit = DigitInput(pixels=np.ones(784, dtype=np.float32), source="test digit", true_label=true_label)
        return Classified(digit, prediction, "ckks", "key1", fake.key_blob_url, {}, None, "no model")

    assert classified(9).label == 9 and classified(9).correct is True
    assert classified(4).correct is False
    assert classified(None).correct is None
