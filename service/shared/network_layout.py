"""Where the ``network`` scheme puts pixels and weights in the CKKS slots (both halves use it).

With S slots, H hidden units, R = S / H copies and T diagonals, slot u of the request holds pixel
``f(u) = (u mod T) + T * (floor(u / H) mod R)`` (zero where that is past the 784 pixels): chunk A of
H slots holds pixels T*A .. T*A + T - 1, repeated H / T times. Layer 1 then computes, for every slot
s, ``z[s] = sum_t d_t[s] * x_slot[s + t]`` over t < T with ``d_t[s] = W1[s mod H][f(s + t)]``, and a
rotate-and-sum over the R chunks gives hidden unit s mod H at every slot s. That covers each
(unit, pixel) pair exactly once: for unit r the slots read are r + H*a + t (a < R, t < T), and f maps
them one-to-one onto the T*R >= 784 pixel positions, because u mod T gives t and floor(u / H) then
gives a. So T = 32 products cover a 128 x 784 matrix in 4096 slots, with the copies doing the rest.
"""
from __future__ import annotations

import numpy as np

from service.shared.specs import N_CLASSES, N_FEATURES, NetworkParams

__all__ = ["hidden_bias", "layer1_diagonals", "layer2_row_weights", "slot_pixels"]


def slot_pixels(p: NetworkParams) -> np.ndarray:
    """The pixel index each request slot holds, or -1 for a zero slot; shape (S,)."""
    if p.hidden_units % p.diagonals or p.diagonals * p.copies < N_FEATURES or p.diagonals % p.baby_steps:
        raise ValueError(f"no layout for {p}: T must divide H and B must divide T, and T * S / H >= 784")
    slot = np.arange(p.slot_count)
    pixel = slot % p.diagonals + p.diagonals * ((slot // p.hidden_units) % p.copies)
    return np.where(pixel < N_FEATURES, pixel, -1)


def layer1_diagonals(w1: np.ndarray, p: NetworkParams) -> np.ndarray:
    """The T diagonals of layer 1, diagonal g*B + i rotated right by g*B for the giant steps; (T, S)."""
    pixels = slot_pixels(p)
    slot = np.arange(p.slot_count)
    unit = slot % p.hidden_units
    padded = np.concatenate([w1, np.zeros((p.hidden_units, 1))], axis=1)  # column -1: a zero slot
    out = np.empty((p.diagonals, p.slot_count))
    for t in range(p.diagonals):
        diagonal = padded[unit, pixels[(slot + t) % p.slot_count]]
        out[t] = np.roll(diagonal, (t // p.baby_steps) * p.baby_steps)
    return out


def hidden_bias(b1: np.ndarray, p: NetworkParams) -> np.ndarray:
    """Layer 1's bias at every slot (unit s mod H at slot s); shape (S,)."""
    return np.tile(b1, p.copies)


def layer2_row_weights(w2: np.ndarray, p: NetworkParams) -> np.ndarray:
    """Class c's weights in chunk c (slots H*c .. H*c + H - 1), zero in the other chunks; shape (S,)."""
    if p.copies < N_CLASSES:
        raise ValueError(f"{p.copies} chunks cannot hold {N_CLASSES} classes")
    out = np.zeros((p.copies, p.hidden_units))
    out[:N_CLASSES] = w2
    return out.ravel()
