"""How it works: the flow as a diagram, and the trust model in plain words."""

from __future__ import annotations

import streamlit as st

from lib.formatting import format_bytes
from lib.schemes import SPECS
from lib.view_models import error_source, security_summary
from service.shared.specs import BROWSER
from ui.state import page_setup

state = page_setup("How it works")
info = SPECS[state.scheme]
status = state.key.status()
key_size = (
    f" ({format_bytes(status.key_bytes)})" if status.key_bytes and status.scheme == state.scheme else ""
)

# Both diagrams: left to right, dark boxes; a cluster's colour says what it sees (green: plaintext).
GRAPH_STYLE = """
digraph {
  rankdir=LR; bgcolor="transparent"; nodesep=0.5; ranksep=0.7; newrank=true;
  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=12, color="#8a94a6",
        fontcolor="#e6e6e6", fillcolor="#1a1f2b", margin="0.18,0.1"];
  edge [fontname="Helvetica", fontsize=10, color="#8a94a6", fontcolor="#c8cdd6"];
"""

st.title(":material/schema: How it works")
st.caption(
    "One prediction, from your digit to the decrypted result. Green: sees plaintext. Orange: never does."
)

FLOW = GRAPH_STYLE + """

  subgraph cluster_app {
    label="Streamlit app: trusted, holds the secret key"; fontcolor="#81c784"; color="#81c784";
    style="rounded,dashed"; fontname="Helvetica"; fontsize=12; margin=14;
    keygen [label="Key pair\\nmade once per session"];
    draw [label="Your digit\\n28×28 pixels"];
    encrypt [label="Encrypt\\n(SCHEME)"];
    decrypt [label="Decrypt\\n10 scores → digit", color="#81c784"];
  }
  subgraph cluster_cloud {
    label="Cloud side: untrusted, sees no plaintext"; fontcolor="#ffb74d"; color="#ffb74d";
    style="rounded,dashed"; fontname="Helvetica"; fontsize=12; margin=14;
    blob [label="Blob storage\\npublic keys only", shape=cylinder];
    service [label="Scoring service\\nMODEL on ciphertext"];
  }
  { rank=same; keygen; draw; }
  { rank=same; encrypt; decrypt; }
  { rank=same; blob; service; }

  keygen -> blob [label="1 · public keys, onceKEY_SIZE", color="#81c784"];
  draw -> encrypt;
  keygen -> encrypt [style=dotted, label="public key"];
  keygen -> decrypt [style=dotted, label="secret key: never leaves"];
  encrypt -> service [label="2 · ciphertext + read-only SAS link", color="#4fc3f7"];
  blob -> service [label="3 · fetch keys (cached)", constraint=false];
  service -> decrypt [label="4 · encrypted scores", color="#4fc3f7"];
}
""".replace("SCHEME", state.scheme).replace("KEY_SIZE", key_size)
FLOW = FLOW.replace("MODEL", "neural network" if state.scheme == "network" else "linear model")
st.graphviz_chart(FLOW, width="stretch")

st.header("Who holds what")
app, service, storage = st.columns(3, gap="large")
with app:
    st.subheader(":green[:material/verified_user:] The Streamlit app")
    st.markdown(
        "- Makes the key pair when your session starts and keeps the **secret key** in this process's memory. "
        "It is never written to disk, uploaded or sent.\n"
        "- Encrypts your digit and decrypts the result: the only place either exists in plaintext.\n"
        "- Holds the storage account key, only to upload the public keys and to sign short-lived, "
        "read-only links to them."
    )
with service:
    st.subheader(":orange[:material/dns:] The scoring service")
    st.markdown(
        "- Receives **ciphertexts** and a link to the **public keys**, nothing else.\n"
        "- Computes the model's 10 scores on the ciphertext (homomorphically) and returns them "
        "**still encrypted**: it never sees the digit, the scores or the answer.\n"
        "- It knows its own model, and sees sizes and timing: that a request happened, not what it held."
    )
with storage:
    st.subheader(":orange[:material/database:] Blob storage")
    st.markdown(
        f"- Holds the **public keys only**, one blob per session key. With {info.title}: "
        f"{info.public_material}.\n"
        "- Public keys let anyone encrypt and compute on ciphertexts, but **not decrypt**.\n"
        "- The blob is deleted when you press **New key** or switch the scheme in the sidebar, or when the "
        "session ends."
    )

st.header("Why a SAS, not the account key")
st.markdown(
    "A **shared access signature (SAS)** is a URL query string signed with the storage account key. It grants "
    "exactly what it says and nothing more: here **read** (`sp=r`) of **one blob** (`sr=b`, the public keys) "
    "**until an expiry time** (`se=…`). Azure Storage checks the signature on every request.\n\n"
    "Sending the account key instead (as the original Azure ML sample did with a connection string) would give "
    "the scoring service full control of the storage account: read, overwrite or delete every blob, "
    "indefinitely. A read-only, expiring SAS limits what a compromised or curious service could do to reading "
    "public keys, which are public anyway. The service also checks that the keys' SHA-256 matches what the "
    "app sent, so a swapped blob is refused."
)

st.header("How strong is the encryption")
st.markdown(
    f"This session uses **{info.title}** ({info.library}). {info.summary}\n\n"
    f"{security_summary(state.scheme)} The decrypted scores differ from the plaintext ones only a little "
    f"({error_source(state.scheme)}), which the main page's reference check shows.\n\n"
    "Switch the scheme in the sidebar; the **Schemes** page compares all four on the same digits."
)

net = SPECS["network"].params
st.header("The network scheme, layer by layer")
st.markdown(
    f"""
The **network** scheme runs a small neural network, 784 → {net.hidden_units} → 10, on one CKKS ciphertext:
N = {net.poly_modulus_degree:,} gives {net.slot_count:,} slots, and the coefficient modulus has two 60-bit
data primes (one multiplicative level) and a 60-bit special prime for key switching.

| step | on the ciphertext | what it costs |
|---|---|---|
| Packing (in the app) | each pixel goes into {net.slot_count // (net.diagonals * net.copies)} of the slots, placed so that {net.diagonals} products cover all {net.hidden_units} × 784 weights | one encryption |
| Layer 1 (784 → {net.hidden_units}) | {net.diagonals} plaintext products with the weight diagonals, in baby steps and giant steps: {net.baby_steps - 1} rotations of your ciphertext, {net.giant_steps - 1} of partial sums; then {net.copies.bit_length() - 1} rotate-and-adds leave one hidden unit in every slot | {net.baby_steps + net.giant_steps - 2 + net.copies.bit_length() - 1} rotations at the top level: most of the time |
| Activation x² | one ciphertext × ciphertext square, relinearised (with the relinearisation key), then rescaled: one 60-bit prime is dropped | the one multiplicative level |
| Layer 2 ({net.hidden_units} → 10) | one plaintext product, then {net.hidden_units.bit_length() - 1} rotate-and-adds: class c's score lands in slot {net.hidden_units}·c | {net.hidden_units.bit_length() - 1} rotations at the last level, each about half the cost of a top-level one |
| Mask | the other {net.slot_count - 10:,} slots would hold hidden values times weights; fresh random noise covers them | one plaintext addition |

**Why a square.** CKKS can only add and multiply. A ReLU or a sigmoid would need a high-degree polynomial
approximation and many levels; x² is exact and costs one level. The network was trained with the square in the
loop, so it is the activation the model expects, not an approximation of one.

**The keys.** Every rotation needs a Galois key: {len(net.galois_steps)} of them, one per power of two from 1 to
{net.galois_steps[-1]:,} (a rotation by 3 is one by 2 and one by 1), plus the relinearisation key for the square:
{SPECS["network"].public_material}. The service can compute with them, never decrypt.
"""
)

# --- The "Encrypt in my browser" mode: the tab holds the key, the app's server process only relays. ---
browser = BROWSER.params
# The descriptor's library reads "<tab's SEAL> in the browser tab; <service's SEAL> on the service".
tab_library, _, service_library = browser.library.partition("; ")
tab_library = tab_library.removesuffix(" in the browser tab")
service_library = service_library.removesuffix(" on the service")
tab_ui_library = BROWSER.library.partition("; ")[0].removesuffix(" in the tab")
data_primes = len(browser.coeff_modulus_bits) - 1  # the last prime is the special one, for key switching
# One seeded ciphertext: c0 at the top level (N coefficients per data prime, 8 bytes each); c1 is a seed.
ciphertext_size = format_bytes(browser.poly_modulus_degree * data_primes * 8)

st.header("In your browser: the mode where the app's server sees nothing either")
st.caption(
    "The main page's **Encrypt in my browser** input mode moves the green box above into your browser tab. "
    "Green: sees plaintext. Orange: never does."
)
BROWSER_FLOW = GRAPH_STYLE + """

  subgraph cluster_tab {
    label="Your browser tab: trusted, holds the secret key"; fontcolor="#81c784"; color="#81c784";
    style="rounded,dashed"; fontname="Helvetica"; fontsize=12; margin=14;
    keygen [label="Key pair\\nTAB_LIBRARY\\nin WebAssembly, once per tab"];
    draw [label="Your digit\\ncanvas → 28×28 in the tab"];
    encrypt [label="Encrypt\\n(browser)"];
    decrypt [label="Decrypt\\nscores and prediction\\nshown in the tab", color="#81c784"];
  }
  subgraph cluster_relay {
    label="Streamlit server process: untrusted,\\nrelays only: sees ciphertexts and public keys";
    fontcolor="#ffb74d"; color="#ffb74d";
    style="rounded,dashed"; fontname="Helvetica"; fontsize=12; margin=14;
    relay [label="Relay\\nchecks shapes, uploads keys,\\nforwards ciphertexts"];
  }
  subgraph cluster_cloud {
    label="Cloud side: untrusted, sees no plaintext"; fontcolor="#ffb74d"; color="#ffb74d";
    style="rounded,dashed"; fontname="Helvetica"; fontsize=12; margin=14;
    blob [label="Blob storage\\npublic keys only", shape=cylinder];
    service [label="Scoring service\\nneural network on ciphertext\\nSERVICE_LIBRARY"];
  }
  { rank=same; keygen; draw; }
  { rank=same; encrypt; decrypt; }
  { rank=same; blob; service; }

  keygen -> relay [label="1 · public keys, once (KEY_SIZE)", color="#81c784"];
  relay -> blob [label="1 · public keys", color="#81c784"];
  draw -> encrypt;
  keygen -> encrypt [style=dotted, label="public key"];
  keygen -> decrypt [style=dotted, label="secret key: never leaves the tab"];
  encrypt -> relay [label="2 · ciphertext (CT_SIZE)", color="#4fc3f7"];
  relay -> service [label="2 · ciphertext + read-only SAS link", color="#4fc3f7"];
  blob -> service [label="3 · fetch keys (cached)", constraint=false];
  service -> relay [label="4 · encrypted scores", color="#4fc3f7"];
  relay -> decrypt [label="4 · encrypted scores", color="#4fc3f7"];
}
"""
for placeholder, value in {
    "TAB_LIBRARY": tab_library,
    "SERVICE_LIBRARY": service_library,
    "KEY_SIZE": BROWSER.public_material.rpartition("about ")[2],
    "CT_SIZE": ciphertext_size,
}.items():
    BROWSER_FLOW = BROWSER_FLOW.replace(placeholder, value)
st.graphviz_chart(BROWSER_FLOW, width="stretch")

st.markdown(
    f"""
- **Your browser tab** (trusted): makes the key pair with {tab_ui_library} and keeps the **secret
  key** in the tab's memory; draws your digit on its own canvas, normalises it to 28×28 (a JavaScript port of
  the app's own normalisation), encrypts it, decrypts the scores and shows the prediction, the scores and a
  latency waterfall. The digit, the secret key and the result exist in plaintext only here.
- **The Streamlit server process** (untrusted, like the cloud side): **relays only, and sees ciphertexts and
  public keys**. It checks their shape, uploads the public keys to blob storage behind a read-only, expiring
  SAS link, forwards each ciphertext to the scoring service as the `{BROWSER.name}` scheme and hands the
  encrypted scores back to the tab. It never holds your digit's pixels, the secret key, the scores or the
  prediction. (It still holds the storage account key, to upload the public keys and sign the link.)
- **Blob storage and the scoring service** (untrusted): as above, public keys and ciphertexts only. The
  service runs the same neural network as the `network` scheme, with the same parameters (CKKS,
  N = {browser.poly_modulus_degree:,}), on {service_library}. The SEAL version in its result's header is
  rewritten, in one checked place, to the one node-seal reads.
- **Proven by a test**: `tests/test_browser_mode.py` searches every message the tab sent this app, the app's
  session state, its log, every request body and the uploaded blobs for the digit's pixels and the secret
  key's bytes.
- **The honest limit**: the page's JavaScript, node-seal included, comes from the app's host, and anything
  running in the page can read the key. You trust the code it serves: a malicious host could serve different
  code, which is the limit of any client delivered over the web. This mode removes the host's **access to
  your digit at run time**; it does not remove the need to trust the code.
- **What it costs**: the key pair is made in the tab (the waterfall shows how long); the public material,
  {BROWSER.public_material}, is uploaded once per tab; then one ciphertext of about {ciphertext_size} goes
  out per digit.
"""
)
