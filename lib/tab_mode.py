"""The "Encrypt in my browser" mode, server-process side: it relays, and can read nothing it relays.

In this mode the browser tab holds the key pair (node-seal, frontend/browser_encryption/): it draws,
normalises, encrypts and decrypts. This process gets only the tab's public material and ciphertexts:
it checks their shape (``checked_public_material``, ``checked_ciphertext``), uploads the public material
to blob storage and relays each ciphertext to the scoring service as the ``browser`` scheme
(``start_relay``: an ``EncryptedSession`` whose client half is ``TabKeys``), and hands the encrypted
result back to the tab. ``tab_config`` is everything the tab needs to know of the scheme, derived
from the one spec (service/shared/specs.py, ``BROWSER``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
import time
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from lib.errors import DemoError, InvalidInput
from lib.session import EncryptedSession, close_quietly
from lib.settings import AppSettings
from service.shared.network_layout import slot_pixels
from service.shared.network_model import load_network
from service.shared.seal4 import make_context, rescaled_prime, split_objects
from service.shared.seal_header import COMPR_NONE, SealFormatError, read_header
from service.shared.specs import BROWSER

__all__ = [
    "TAB_SEAL_VERSION",
    "TabKeys",
    "TabRelay",
    "checked_ciphertext",
    "checked_public_material",
    "start_relay",
    "tab_config",
]

log = logging.getLogger("encrypted_mnist.app")

TAB_SEAL_VERSION = (4, 1)
"""What node-seal 6.0.3 writes: Microsoft SEAL 4.1.2."""
MAX_PUBLIC_MATERIAL_BYTES = 8 * 1024 * 1024  # 12 Galois keys + relinearisation keys: 5.18 MB
MAX_CIPHERTEXT_BYTES = 256 * 1024  # one seeded ciphertext: 131 kB
MAX_RESULT_BYTES = 256 * 1024  # one result at the last level: 131 kB
_SCORE_MARGIN = 1.0  # CKKS noise on a score is below 1e-2; a wrong key's "scores" are in the thousands


def tab_config() -> dict[str, Any]:
    """What the tab's client half needs of the ``browser`` scheme, as JSON: parameters, the slot
    layout, the result's scale, and the largest score the model can produce (for its result check)."""
    p = BROWSER.params
    layer1 = 2.0 ** (p.input_scale_bits + p.layer1_scale_bits)
    result_scale = layer1 * layer1 / rescaled_prime(make_context(p)) * 2.0**p.layer2_scale_bits
    return {
        "scheme": BROWSER.label,
        "poly_modulus_degree": p.poly_modulus_degree,
        "coeff_modulus_bits": list(p.coeff_modulus_bits),
        "input_scale_bits": p.input_scale_bits,
        "galois_steps": list(p.galois_steps),
        "slot_pixels": slot_pixels(p).tolist(),
        "output_slots": list(p.output_slots),
        "result_scale": result_scale,
        "max_result_bytes": MAX_RESULT_BYTES,
        "score_bound": load_network().logit_bound() + _SCORE_MARGIN,
    }


def _decoded(text: object, what: str, limit: int) -> bytes:
    if not isinstance(text, str) or not text:
        raise InvalidInput(f"The browser sent no {what}.")
    if len(text) > 4 * (limit // 3) + 4:
        raise InvalidInput(f"The browser's {what} is larger than this scheme's ({limit:,} bytes at most).")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"The browser's {what} is not valid base64.") from None


def _check_tab_object(data: bytes, what: str, offset: int = 0) -> int:
    """A SEAL object as node-seal writes it: SEAL 4.1, uncompressed; returns its size."""
    try:
        header = read_header(data, offset)
    except SealFormatError as error:
        raise InvalidInput(f"The browser's {what} is not a SEAL object: {error}.") from None
    if header.version != TAB_SEAL_VERSION or header.compr_mode != COMPR_NONE:
        raise InvalidInput(
            f"The browser's {what} was not written by node-seal (SEAL {header.version[0]}.{header.version[1]}, "
            f"compression {header.compr_mode}); reload the page to get the current page code."
        )
    return header.size


def checked_public_material(text: object) -> bytes:
    """The tab's public material (base64): exactly two uncompressed SEAL 4.1 objects, bounded in size."""
    data = _decoded(text, "public keys", MAX_PUBLIC_MATERIAL_BYTES)
    try:
        parts = split_objects(data, 2, "the public keys")
    except SealFormatError as error:
        raise InvalidInput(f"The browser's public keys are not what this scheme uploads: {error}.") from None
    for part, what in zip(parts, ("Galois keys", "relinearisation keys"), strict=True):
        _check_tab_object(part, what)
    return data


def checked_ciphertext(text: object) -> str:
    """The tab's ciphertext (base64), as the request carries it: one uncompressed SEAL 4.1 object."""
    data = _decoded(text, "ciphertext", MAX_CIPHERTEXT_BYTES)
    if _check_tab_object(data, "ciphertext") != len(data):
        raise InvalidInput("The browser's ciphertext does not have the size its header says.")
    assert isinstance(text, str)
    return text


class TabKeys:
    """The client half of the ``browser`` scheme as this process sees it: public material only.

    The key pair lives in the tab; this object names its public-key blob and hands the service the
    tab's public material. It cannot encrypt or decrypt: there is no secret key here to do it with.
    """

    spec = BROWSER

    def __init__(self, public_material: bytes) -> None:
        self._public = public_material
        self._key_id = secrets.token_hex(16)
        self.scheme_id = BROWSER.label
        self.result_count = BROWSER.result_count

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def descriptor(self) -> dict[str, Any]:
        return BROWSER.descriptor()

    def public_material(self) -> bytes:
        return self._public

    def encrypt(self, x: np.ndarray) -> list[str]:
        raise TypeError("in the browser mode the tab encrypts; this process never sees the pixels")

    def decrypt(self, results: Sequence[str]) -> np.ndarray:
        raise TypeError("in the browser mode the tab decrypts; this process has no secret key")


def start_relay(settings: AppSettings, public_material: bytes) -> EncryptedSession:
    """Upload the tab's public material and sign a read-only SAS for it: a session that relays."""
    return EncryptedSession.start(
        settings, scheme=BROWSER.name, client_factory=lambda: TabKeys(public_material)
    )


_REQUEST_ID = re.compile(r"[0-9a-f]{16}")


class TabRelay:
    """One browser session's relay: the session for the tab's current key pair, and each request's answer.

    ``answer(request)`` takes the tab's trigger value and returns what goes back to the tab: the
    encrypted result with the app's and the server's stages and the sizes, or an error message; never
    an exception. The public-key blob is deleted when the tab's key changes, at ``close`` and, as a
    last resort, when this object is collected.
    """

    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        self._box: dict[str, Any] = {"session": None}
        self._key_ref = ""
        self._finalizer = weakref.finalize(self, close_quietly, self._box)
        self._finalizer.atexit = False

    def answer(self, request: object) -> dict[str, Any]:
        """The tab's request: ``id``, ``key_ref``, and ``ciphertext`` or ``public_material`` or both (the tab
        sends its public material alone as soon as it has made its key pair, and again with a ciphertext
        if the app no longer holds it)."""
        if not isinstance(request, dict) or not isinstance(request.get("id"), str) \
                or not _REQUEST_ID.fullmatch(request["id"]):
            return {"id": None, "error": "The browser sent a malformed request; reload the page.", "keys_uploaded": None}
        answer: dict[str, Any] = {"id": request["id"]}
        try:
            key_ref = request.get("key_ref")
            if not isinstance(key_ref, str) or not _REQUEST_ID.fullmatch(key_ref):
                raise InvalidInput("The browser sent no valid key reference; reload the page.")
            keys_only = "ciphertext" not in request and "public_material" in request
            ciphertext = "" if keys_only else checked_ciphertext(request.get("ciphertext"))
            stages: list[tuple[str, float, str]] = []
            if "public_material" in request:
                started = time.perf_counter()
                self._switch_keys(key_ref, checked_public_material(request["public_material"]))
                stages.append(("upload public keys (once per tab)", time.perf_counter() - started, "client"))
            if keys_only:
                answer.update(stages=stages, keys_uploaded=self._key_ref)
                return answer
            session = self._box["session"]
            if session is None or key_ref != self._key_ref:
                raise InvalidInput("This app no longer holds your tab's public keys (it restarted). "
                                   "Press the button again: the tab sends them again.")
            relayed = session.relay([ciphertext])
        except DemoError as error:
            answer.update(error=error.message)
        except Exception as error:  # noqa: BLE001 (a bug here: the tab gets a message, the log the type)
            log.error("relaying a browser-mode request failed: %s", type(error).__name__)
            answer.update(error="The app could not relay this request (an internal error, logged). Press the "
                          "button again; if it keeps happening, reload the page.")
        else:
            answer.update(result=relayed.results[0], sizes=relayed.sizes,
                          stages=stages + [(s.name, s.seconds, s.source) for s in relayed.stages])
        answer["keys_uploaded"] = self._key_ref or None
        return answer

    def _switch_keys(self, key_ref: str, public_material: bytes) -> None:
        """Upload a new key pair's public material; the previous one's blob is deleted."""
        old = self._box["session"]
        self._box["session"], self._key_ref = None, ""
        close_quietly({"session": old})
        self._box["session"] = start_relay(self.settings, public_material)
        self._key_ref = key_ref

    def close(self) -> None:
        """Delete the public-key blob and close the connections."""
        self._finalizer()
