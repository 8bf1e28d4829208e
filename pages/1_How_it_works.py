"""How it works: the flow as a diagram, and the trust model in plain words."""

from __future__ import annotations

import streamlit as st

from lib.formatting import format_bytes
from lib.schemes import SPECS
from lib.view_models import error_source, security_summary
from ui.state import page_setup

state = page_setup("How it works")
info = SPECS[state.scheme]
status = state.key.status()
key_size = (
    f" ({format_bytes(status.key_bytes)})" if status.key_bytes and status.scheme == state.scheme else ""
)

st.title(":material/schema: How it works")
st.caption(
    "One prediction, from your digit to the decrypted result. Green: sees plaintext. Orange: never does."
)

FLOW = """
digraph {
  rankdir=LR; bgcolor="transparent"; nodesep=0.5; ranksep=0.7; newrank=true;
  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=12, color="#8a94a6",
        fontcolor="#e6e6e6", fillcolor="#1a1f2b", margin="0.18,0.1"];
  edge [fontname="Helvetica", fontsize=10, color="#8a94a6", fontcolor="#c8cdd6"];

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
