"""What the pages show about a scheme and about one classification, as plain values.

Everything here turns state (a scheme's name, a ``Classified`` result) into text or facts for the
pages; nothing draws anything, so it is tested without Streamlit. The scheme facts themselves live
in ``lib.schemes.SPECS``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from lib.digits import DigitInput
from lib.reference import ReferenceCheck
from lib.schemes import SPECS, descriptor
from lib.session import Prediction
from service.shared.model_files import MODEL_DIR

__all__ = [
    "HE_STANDARD_MAX_BITS_128",
    "Classified",
    "error_source",
    "plaintext_accuracy",
    "public_material",
    "scheme_title",
    "security_summary",
]

# The Homomorphic Encryption Standard's largest coefficient modulus (bits) for 128-bit classical
# security, per polynomial modulus degree N; SEAL refuses larger moduli at context creation.
HE_STANDARD_MAX_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


def scheme_title(name: str) -> str:
    """The scheme's display name, e.g. "ckks: SEAL 4 CKKS"; the bare name for an unknown scheme."""
    info = SPECS.get(name)
    return info.title if info is not None else name


def error_source(name: str) -> str:
    """Where a scheme's difference from the plaintext scores comes from, for help texts."""
    info = SPECS.get(name)
    return info.error_source if info is not None else "encryption noise and rounding"


def public_material(name: str) -> str:
    """What a scheme puts in blob storage, e.g. "8 Galois keys ..."; generic for an unknown scheme."""
    info = SPECS.get(name)
    return info.public_material if info is not None else "the public keys"


@functools.cache
def plaintext_accuracy(name: str) -> float | None:
    """The test accuracy the model card of scheme ``name``'s model records (real MNIST test set), if any."""
    info = SPECS.get(name)
    if info is None:
        return None
    try:
        card = json.loads((MODEL_DIR / info.model_card).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = card.get("test_accuracy") if isinstance(card, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def security_summary(name: str) -> str:
    """One markdown sentence: N, the coefficient modulus, and why that is 128-bit security."""
    params = descriptor(name)["params"]
    n = int(params["poly_modulus_degree"])
    bits = [int(b) for b in params["coeff_modulus_bits"]]
    bound = HE_STANDARD_MAX_BITS_128.get(n)
    within = (
        f"within the **128-bit security** bound of the Homomorphic Encryption Standard (at most {bound} bits "
        f"for N = {n:,})"
        if bound is not None
        else "at **128-bit security**"
    )
    return (
        f"Polynomial modulus degree **N = {n:,}** and a **{sum(bits)}-bit** coefficient modulus "
        f"({' + '.join(str(b) for b in bits)} bits): {within}. SEAL enforces it: it refuses to create a "
        "context with parameters below 128-bit security."
    )


@dataclass(frozen=True, eq=False)
class Classified:
    """One encrypted classification with everything the pages show about it."""

    digit: DigitInput
    prediction: Prediction
    scheme: str  # the scheme's name, e.g. "bfv"
    key_id: str
    key_blob_url: str
    setup_timings_s: dict[str, float]
    reference: ReferenceCheck | None
    reference_note: str  # why there is no reference check, if there is none

    @property
    def label(self) -> int:
        """The predicted class."""
        return self.prediction.label

    @property
    def correct(self) -> bool | None:
        """Whether the prediction matches the true label (None for a drawing)."""
        return None if self.digit.true_label is None else self.digit.true_label == self.label
