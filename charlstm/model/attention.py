"""One attention head over the model's own past, then a Boom feed-forward layer: the block of
SHA-RNN (Merity 2019, "Single Headed Attention RNN: Stop Thinking With Your Head"), placed on
the top recurrent layer's output, between the recurrent stack and the head (`--attention M`).

For the top layer's output h_t (H,) and a memory m of the last M layer-normed outputs:

    s_j   = LN_mem(h_j)                           the memory holds s (what keys/values read)
    x_t   = LN_mid(h_t)
    q_t   = σ(a_q) ⊙ LN_q(W_q x_t + b_q)          the only matrix on the attention's inputs
    k_j   = σ(a_k) ⊙ s_j                          keys and values: no matrix, a gate each
    v_j   = g ⊙ s_j,  g = σ(W_g σ(a_v) + b_g)[H:] ⊙ tanh(W_g σ(a_v) + b_g)[:H]  ("Overparam")
    w_tj  = softmax_j(q_t · k_j / √H)  over j = t-M … t, the slots of m that hold a state
    a_t   = x_t + Σ_j w_tj v_j
    y_t   = LN_ff(a_t) + Σ_{c<4} chunk_c(GELU(W_up LN_xff(a_t) + b_up))   the Boom: H → 4H,
                                                  then the four H-wide chunks summed (no W_down)

GELU is SHA-RNN's x·σ(1.702x). Dropout (training only) falls on the attention's mix and the
Boom's output, as the paper's block drops them before each residual sum.

Followed: one head; the query alone through a matrix and a layer norm; keys and values the
layer-normed states times learnt sigmoid gates (the value gate over-parameterised); scaled dot
products; the memory carried across windows and detached like the state; the Boom with its
chunk sum; the layer norms and residuals where the paper's Block puts them. Simplified: one
block on the top layer (the paper puts it on the next-to-last of four layers and gives every
layer a Boom); no lnstart before the recurrence; no dropout on q and v; attention reaches
exactly M states back from every position (the paper's reach grows across a window: memory +
the window so far), so the output does not depend on where windows are cut, and a step of
sampling computes what training computed.

The memory is one more part of the model's state, (M, B, H) with B on dim 1 like the others,
oldest slot first. A slot of all zeros is empty (never attended): a zero state is an empty
memory, and zeroing a stream's state (a reset, a fresh stream) empties its memory too.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

BOOM = 4  # the Boom's width, in multiples of H


def _product_dtype(x: Tensor) -> torch.dtype:
    """The dtype the block's products run in: autocast's where it is on, else x's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def gelu(x: Tensor) -> Tensor:
    """SHA-RNN's GELU: x·σ(1.702x) (Hendrycks & Gimpel's sigmoid approximation)."""
    return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """The SHA-RNN block over (B, T, H) windows with a carried memory (M, B, H)."""

    def __init__(self, hidden: int, memory: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden, self.memory = hidden, memory
        self.ln_mem, self.ln_mid = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.ln_ff, self.ln_xff = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.q, self.ln_q = nn.Linear(hidden, hidden), nn.LayerNorm(hidden)
        # The gates start at σ(0) = ½, "scaling everything down to begin with" (SHA-RNN).
        self.a_q = nn.Parameter(torch.zeros(hidden))
        self.a_k = nn.Parameter(torch.zeros(hidden))
        self.a_v = nn.Parameter(torch.zeros(hidden))
        self.over = nn.Linear(hidden, 2 * hidden)  # the value gate's over-parameterisation
        self.up = nn.Linear(hidden, BOOM * hidden)
        self.drop = nn.Dropout(dropout)

    def value_gate(self) -> Tensor:
        """g (H,): Overparam(σ(a_v)), a function of parameters only."""
        c, f = self.over(torch.sigmoid(self.a_v)).split(self.hidden, dim=-1)
        return torch.sigmoid(f) * torch.tanh(c)

    def forward(
        self, h: Tensor, mem: Tensor | None, weights: bool = False
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """h (B, T, H), mem (M, B, H) or None (empty) -> (y (B, T, H), the new memory (M, B, H),
        with `weights` the attention weights (B, T, M + T) over [memory, window], else None)."""
        b, t, hid = h.shape
        m = self.memory
        s = self.ln_mem(h)  # (B, T, H)
        if mem is None:
            mem = s.new_zeros(m, b, hid)
        # The memory is read apart from the window: it is detached, so the backward pass builds
        # no gradient for its M rows (one [memory, window] tensor cost two (B, M + T, H)
        # products there). One contiguous copy, in the products' dtype, serves both products.
        past = mem.transpose(0, 1).to(_product_dtype(s)).contiguous()  # (B, M, H)
        x = self.ln_mid(h)
        q = torch.sigmoid(self.a_q) * self.ln_q(self.q(x))  # (B, T, H)
        # The gates are per feature, so they go on the T queries and the T mixes instead of the
        # M + T keys and values: q·(σ(a_k)⊙s) = (q⊙σ(a_k))·s and Σ w (g⊙s) = g⊙Σ w s.
        qs = q * (torch.sigmoid(self.a_k) / math.sqrt(hid))
        scores = torch.cat([torch.matmul(qs, past.transpose(1, 2)),
                            torch.matmul(qs, s.transpose(1, 2))], dim=-1)  # (B, T, M + T)
        scores = scores.masked_fill(~self.visible(mem, t), float("-inf"))
        w = torch.softmax(scores.float(), dim=-1)
        w_past, w_now = w.to(past.dtype).split([m, t], dim=-1)
        mix = self.value_gate() * (torch.matmul(w_past, past) + torch.matmul(w_now, s))
        a = x + self.drop(mix)
        boom = gelu(self.up(self.ln_xff(a)))  # (B, T, 4H)
        y = self.ln_ff(a) + self.drop(boom.view(b, t, BOOM, hid).sum(dim=2))
        newest = s.transpose(0, 1)  # (T, B, H)
        new_mem = torch.cat([mem[t:].to(s.dtype), newest]) if t < m else newest[-m:]  # (M, B, H)
        return y, new_mem, (w if weights else None)

    def visible(self, mem: Tensor, t: int) -> Tensor:
        """(B, T, M + T) bool: query i (at M + i) sees slots i … M + i that hold a state."""
        m = self.memory
        i = torch.arange(t, device=mem.device).view(-1, 1)
        j = torch.arange(m + t, device=mem.device).view(1, -1)
        band = (j >= i) & (j <= i + m)  # (T, M + T)
        # (B, M): an all-zero slot is empty. Two reductions and no temporary: 1.3 ms on a
        # 256 × 128 × 256 memory, where abs then amax took 17 ms and ≠ 0 then any 8.5 ms.
        filled = ((mem.amax(dim=-1) != 0) | (mem.amin(dim=-1) != 0)).t()
        held = torch.cat([filled, filled.new_ones(mem.shape[1], t)], dim=1)  # (B, M + T)
        return band.unsqueeze(0) & held.unsqueeze(1)
