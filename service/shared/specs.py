"""Each scheme defined once: one frozen record per scheme, and the one registry ``SPECS``.

A ``SchemeSpec`` holds the scheme's name and version, its typed parameters, the layout of its
requests and results, and the security and storage facts the UI shows. The client sends
``spec.descriptor()`` with every request; the service accepts a request only if its descriptor
is exactly that (``spec.mismatch``). Both halves hold the same record, so they cannot drift.

The ``ei`` parameters are read once from encrypted-inference's own ``parameters.json`` (without
importing its native library), so they cannot drift from the installed package either.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar

N_FEATURES = 784
N_CLASSES = 10
SEAL4_LIBRARY = "SEAL 4 (tenseal.sealapi)"
_SEAL4_UI_LIBRARY = "Microsoft SEAL 4 (tenseal.sealapi)"
_SECURITY = "128-bit: SEAL refuses weaker parameters when it creates the context (TC128)."
_APPROXIMATE = "CKKS computes on approximate numbers: tiny noise"


@dataclass(frozen=True)
class EiParams:
    """encrypted-inference 0.9's CKKS parameters (SEAL 3.5), as its ``parameters.json`` sets them."""

    poly_modulus_degree: int
    coeff_modulus_bits: tuple[int, ...]
    scale_bits: int


@dataclass(frozen=True, kw_only=True)
class Seal4Params:
    """What every SEAL 4 parameter set starts with (its descriptor lists these first)."""

    library: str = SEAL4_LIBRARY
    security_bits: int = 128
    poly_modulus_degree: int
    coeff_modulus_bits: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class CkksParams(Seal4Params):
    """SEAL 4 CKKS: all pixels in one ciphertext, twice; 8 diagonals, then a rotate-and-sum."""

    input_scale_bits: int
    weight_scale_bits: int
    galois_steps: tuple[int, ...]
    """Rotations by 1 (the diagonals), then the rotate-and-sum steps."""
    output_slots: tuple[int, ...] = field(init=False)
    """Where class c's score is: slot c for c < 8 (the first half), 1024 + c - 8 after."""

    def __post_init__(self) -> None:
        rows, block = self.rows_per_half, self.block
        object.__setattr__(
            self, "output_slots", tuple(c if c < rows else block + c - rows for c in range(N_CLASSES))
        )

    @property
    def block(self) -> int:
        """The pixels are zero-padded to this many slots; two copies fill the N/2 slots."""
        return self.poly_modulus_degree // 4

    @property
    def rows_per_half(self) -> int:
        """Class rows per half of the slots: the first rotate-and-sum step adds blocks of this many."""
        return self.galois_steps[1]

    @property
    def sum_steps(self) -> tuple[int, ...]:
        return self.galois_steps[1:]


@dataclass(frozen=True, kw_only=True)
class BfvParams(Seal4Params):
    """SEAL 4 BFV coefficient packing: two half-images, one result, every other coefficient masked."""

    plain_modulus_bits: int
    pixel_levels: int
    weight_scale_bits: int
    pixels_per_ciphertext: int
    output_coefficients: tuple[int, ...] = field(init=False)
    """Where class c's score (times pixel_levels * 2^weight_scale_bits) is in the result polynomial."""

    def __post_init__(self) -> None:
        first, spacing = self.pixels_per_ciphertext, self.class_spacing
        object.__setattr__(self, "output_coefficients", tuple(first + spacing * c for c in range(N_CLASSES)))

    @property
    def class_spacing(self) -> int:
        return self.pixels_per_ciphertext + 1


@dataclass(frozen=True, kw_only=True)
class NetworkParams(Seal4Params):
    """SEAL 4 CKKS running 784 -> hidden -> 10 with a square activation, one ciphertext each way.

    Layout (service/shared/network_layout.py): the N/2 slots are ``copies`` chunks of ``hidden_units``
    slots; layer 1 is ``diagonals`` plaintext products in baby steps of ``baby_steps`` and giant steps
    of as many, then a rotate-and-sum over the chunks; the square; layer 2 is one product and a
    rotate-and-sum inside each chunk, which leaves class c's score at slot ``hidden_units * c``.
    """

    hidden_units: int
    input_scale_bits: int
    layer1_scale_bits: int
    layer2_scale_bits: int
    diagonals: int
    baby_steps: int
    galois_steps: tuple[int, ...]
    """Powers of two from 1 to N/4: every rotation of the layout is one of them or repeats one."""
    output_slots: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_slots", tuple(self.hidden_units * c for c in range(N_CLASSES)))

    @property
    def slot_count(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def copies(self) -> int:
        """How many times layer 1's result repeats across the slots (one chunk of hidden units each)."""
        return self.slot_count // self.hidden_units

    @property
    def giant_steps(self) -> int:
        return self.diagonals // self.baby_steps


Params = EiParams | CkksParams | BfvParams | NetworkParams
P = TypeVar("P", EiParams, CkksParams, BfvParams, NetworkParams)


def _wire_params(params: Params) -> dict[str, Any]:
    """The parameters as JSON: every field in declaration order (base class first), tuples as
    lists. The order is part of the contract: requests repeat the descriptor exactly."""
    wire: dict[str, Any] = {}
    for item in fields(params):
        value = getattr(params, item.name)
        wire[item.name] = list(value) if isinstance(value, tuple) else value
    return wire


@dataclass(frozen=True)
class SchemeSpec(Generic[P]):
    """One scheme, as both halves and the UI know it; ``P`` is its parameter record's type."""

    name: str
    version: str
    params: P
    ciphertext_count: int
    """Request ciphertexts per image."""
    result_count: int
    """Result ciphertexts per response."""
    title: str
    library: str
    summary: str
    public_material: str
    security: str
    error_source: str
    """Why decrypted scores differ from the plaintext model's."""
    model: str = "the linear model (logistic regression, 784 -> 10)"
    """Which of the service's models the scheme runs."""
    model_card: str = "model_card.json"
    """That model's card in the model folder (its plaintext test accuracy is there)."""
    _descriptor: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        wire = {"name": self.name, "version": self.version, "params": _wire_params(self.params)}
        object.__setattr__(self, "_descriptor", wire)

    @property
    def label(self) -> str:
        """``name-version``, as the service names the scheme in its responses."""
        return f"{self.name}-{self.version}"

    def descriptor(self) -> dict[str, Any]:
        """{"name", "version", "params"} as the request carries it (a fresh copy the caller may change)."""
        params = {key: list(value) if isinstance(value, list) else value
                  for key, value in self._descriptor["params"].items()}
        return {"name": self.name, "version": self.version, "params": params}

    def mismatch(self, requested: Mapping[str, Any]) -> list[str] | None:
        """None if ``requested`` is exactly this descriptor, else what differs: "version", parameter
        names, or ["shape"] when only the object's shape does (the service's check)."""
        if requested == self._descriptor:
            return None
        ours = {"version": self.version, **self._descriptor["params"]}
        params = requested.get("params")
        theirs = {"version": requested.get("version"), **(params if isinstance(params, dict) else {})}
        return sorted(key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key)) or ["shape"]


def _ei_spec() -> SchemeSpec[EiParams]:
    """``ei`` from the installed encrypted-inference: its parameters.json and its version."""
    found = importlib.util.find_spec("encrypted.inference.internal")  # locates it without running it
    if found is None or not found.submodule_search_locations:
        raise RuntimeError("encrypted-inference is not installed")
    path = Path(next(iter(found.submodule_search_locations))) / "parameters.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    scale = float(raw["InitialScale"])
    scale_bits = round(math.log2(scale))
    if 2.0**scale_bits != scale:
        raise RuntimeError(f"encrypted-inference InitialScale {scale} is not a power of two")
    params = EiParams(int(raw["PolyModulusDegree"]), tuple(int(bits) for bits in raw["CoeffModulus"]), scale_bits)
    return SchemeSpec(
        name="ei",
        version=importlib.metadata.version("encrypted-inference"),
        params=params,
        ciphertext_count=-(-N_FEATURES // (params.poly_modulus_degree // 2)),
        result_count=N_CLASSES,  # one per class
        title="ei: encrypted-inference 0.9 (the seed's)",
        library="encrypted-inference 0.9 (Microsoft SEAL 3.5)",
        summary="CKKS, N=8192. One result ciphertext per class; the service reloads the Galois keys for each.",
        public_material="12 Galois keys + relinearisation keys, about 9 MB",
        security=_SECURITY,
        error_source=_APPROXIMATE,
    )


EI = _ei_spec()
# N = 4096; q = one data prime and one special prime for key switching, 109 bits in all.
_CKKS_PARAMS = CkksParams(poly_modulus_degree=4096, coeff_modulus_bits=(54, 55), input_scale_bits=24,
                          weight_scale_bits=21, galois_steps=(1, 8, 16, 32, 64, 128, 256, 512))
CKKS: SchemeSpec[CkksParams] = SchemeSpec(
    "ckks", "1", _CKKS_PARAMS, ciphertext_count=1, result_count=1,
    title="ckks: SEAL 4 CKKS",
    library=_SEAL4_UI_LIBRARY,
    summary="CKKS, N=4096, approximate (errors about 1e-4). All 784 pixels in one ciphertext, 8 plaintext "
    "products and a rotate-and-sum; all 10 scores in one result ciphertext. Its other slots would hold partial "
    "sums of the model; the service masks them with fresh noise.",
    public_material="8 Galois keys (rotations by 1, 8, 16, ..., 512), about 0.5 MB",
    security=_SECURITY,
    error_source=_APPROXIMATE,
)
# N = 4096 with SEAL's BFVDefault q for it at 128 bits; t = 2^32; pixels 0..255, weights x 2^15.
_BFV_PARAMS = BfvParams(poly_modulus_degree=4096, coeff_modulus_bits=(36, 36, 37), plain_modulus_bits=32,
                        pixel_levels=255, weight_scale_bits=15, pixels_per_ciphertext=392)
BFV: SchemeSpec[BfvParams] = SchemeSpec(
    "bfv", "1", _BFV_PARAMS, ciphertext_count=2, result_count=1,
    title="bfv: SEAL 4 BFV, coefficient packing",
    library=_SEAL4_UI_LIBRARY,
    summary="BFV, N=4096, exact integer arithmetic on pixels 0..255 and weights x 2^15. Two polynomial "
    "products give all 10 scores in one result; every other coefficient is masked with fresh randomness.",
    public_material="the public encryption key only (about 0.13 MB): the service uses it to re-randomise the "
    "masked result; no evaluation keys at all",
    security=_SECURITY,
    error_source="BFV computes on integers: the pixels and weights are rounded to fixed point",
)

# N = 8192: two 60-bit data primes (one rescale, after the square) and a 60-bit special prime, 180 of
# the 218 bits SEAL allows at 128-bit security. The scales keep the worst case of any input in [0, 1]
# below the moduli (checked against the model when the service loads it).
_NETWORK_PARAMS = NetworkParams(
    poly_modulus_degree=8192, coeff_modulus_bits=(60, 60, 60), hidden_units=128, input_scale_bits=24,
    layer1_scale_bits=19, layer2_scale_bits=20, diagonals=32, baby_steps=4,
    galois_steps=tuple(2**k for k in range(12)),
)
NETWORK: SchemeSpec[NetworkParams] = SchemeSpec(
    "network", "1", _NETWORK_PARAMS, ciphertext_count=1, result_count=1,
    title="network: a neural network under SEAL 4 CKKS",
    library=_SEAL4_UI_LIBRARY,
    summary="CKKS, N=8192, approximate (score errors below 1e-2). A 784 -> 128 -> 10 network with a square "
    "activation: 32 plaintext products and 15 rotations for layer 1, one ciphertext multiplication and "
    "relinearisation for the square, one product and 7 rotations for layer 2; all 10 scores in one result "
    "ciphertext, its other slots masked with fresh noise.",
    public_material="12 Galois keys (rotations by 1, 2, 4, ..., 2048) + relinearisation keys, about 5 MB",
    security=_SECURITY,
    error_source=_APPROXIMATE,
    model="the neural network (784 -> 128 -> 10, square activation)",
    model_card="network_card.json",
)

SPECS: Mapping[str, SchemeSpec[Any]] = MappingProxyType({spec.name: spec for spec in (EI, CKKS, BFV, NETWORK)})
"""Every scheme the app's own process can encrypt for, by name, in the order the UI lists them."""

# The network again, for a client in the browser tab: node-seal 6.0.3 (SEAL 4.1.2 in WebAssembly)
# makes the keys and the ciphertext there, and the service reads them with seal-python (SEAL 4.4,
# which loads what SEAL 4.1 wrote; tenseal's SEAL 4.3 refuses it). Same circuit, same parameters.
BROWSER: SchemeSpec[NetworkParams] = SchemeSpec(
    "browser", "1",
    replace(_NETWORK_PARAMS, library="SEAL 4.1 (node-seal) in the browser tab; SEAL 4.4 (seal-python) on the service"),
    ciphertext_count=1, result_count=1,
    title="browser: the neural network, encrypted in your browser tab",
    library="Microsoft SEAL 4.1 in WebAssembly (node-seal 6.0.3) in the tab; SEAL 4.4 (seal-python) on the service",
    summary="The network scheme's circuit and parameters (CKKS, N=8192, 784 -> 128 -> 10), with the key pair "
    "made, the digit encrypted and the scores decrypted inside the browser tab. The app's server process only "
    "relays ciphertexts and public keys.",
    public_material="12 Galois keys + relinearisation keys, seeded and uncompressed as node-seal saves them, "
    "about 5.2 MB",
    security=_SECURITY,
    error_source=_APPROXIMATE,
    model=NETWORK.model,
    model_card=NETWORK.model_card,
)

SERVED_SPECS: Mapping[str, SchemeSpec[Any]] = MappingProxyType({**SPECS, BROWSER.name: BROWSER})
"""Every scheme the scoring service runs: the app's four and ``browser``, whose client is the tab."""
