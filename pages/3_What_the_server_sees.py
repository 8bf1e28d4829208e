"""What the server sees: the request body of the last prediction, and why it reveals nothing."""

from __future__ import annotations

import json

import streamlit as st

from lib.display import request_preview, sas_fields
from lib.formatting import format_bytes
from lib.view_models import public_material, scheme_title
from ui.state import page_setup

state = page_setup("What the server sees")
result = state.last

st.title(":material/visibility: What the server sees")
st.caption(
    "Everything the scoring service received for your last prediction, and why none of it reveals the digit."
)

if result is None:
    st.info(
        "No prediction yet in this session: classify a digit first (**Classify a digit**, in the sidebar).",
        icon=":material/arrow_back:",
    )
    st.stop()

body = result.prediction.request_body
sizes = result.prediction.sizes
sas = sas_fields(body["keys"]["url"])

size_metrics = [
    ("Request body", sizes["request_bytes"], f"{sizes['request_bytes']:,} bytes of JSON"),
    ("Ciphertext inside it", sizes["ciphertext_bytes"], f"{sizes['ciphertext_bytes']:,} bytes, sent as base64"),
    ("Response", sizes["response_bytes"], "The 10 scores, encrypted: only this app can decrypt them"),
]
for column, (label, count, help_text) in zip(st.columns(3), size_metrics, strict=True):
    column.metric(label, format_bytes(count), help=help_text)

left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("The request body")
    st.caption(
        "Exactly as sent, except that each ciphertext is cut after 120 characters and the SAS signature is hidden "
        "on this page (it was sent)."
    )
    st.code(json.dumps(request_preview(body), indent=2, ensure_ascii=False), language="json", wrap_lines=True)
with right:
    st.subheader("The key it points to")
    st.markdown(f"**Scheme** {scheme_title(result.scheme)}  \n**Key id** `{result.key_id}`")
    st.markdown("**Public-key blob** (URL without the SAS)")
    st.code(result.key_blob_url, language=None, wrap_lines=True)
    st.markdown(
        f"**SAS fields**: permission `sp={sas.get('sp', '?')}` (read only), resource `sr={sas.get('sr', '?')}` "
        f"(this one blob), expires `se={sas.get('se', '?')}`, plus a signature made with the storage account key."
    )
    st.markdown(
        f"**Key SHA-256** `{body['keys']['sha256'][:16]}…`: the service refuses a blob with other bytes."
    )

st.subheader("Why this reveals nothing")
st.markdown(
    f"- **The ciphertext** is your 784 pixels encrypted with {scheme_title(result.scheme)} under this "
    "session's key. Without the secret key it is indistinguishable from random bytes (the Ring-LWE problem, "
    "at 128-bit security): no pixel, stroke or digit can be read from it.\n"
    f"- **The public keys** behind the link ({public_material(result.scheme)}) let the service compute on "
    "the ciphertext and let anyone encrypt, but they cannot decrypt. The secret key never left this app.\n"
    "- **The result** the service sends back is the 10 scores, encrypted under the same key: the service "
    "computes them without ever seeing them, or which digit won.\n"
    "- **The SAS link** only grants reading that one public-key blob, until it expires. It is not the storage "
    "account key and cannot write or delete anything.\n"
    "- **What the service does learn**: that a request happened, when, and how big it was (about the same "
    "for every digit), and the scheme parameters. It knows its own model, which is not secret from itself."
)
