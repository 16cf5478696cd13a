"""The parallel scan that cells with PARALLEL = True train with (minGRU, minLSTM), and their
training layer (ParallelLayer).

Their recurrence is linear in h: h_t = a_t ⊙ h_{t−1} + b_t, with a_t, b_t > 0 computed from x_t
alone. So every h_t of a window comes at once, in log space (Heinsen, 2023, as in Feng et al.):

    h_t = exp(a*_t) h_0 + exp(a*_t + logcumsumexp_{s ≤ t}(log b_s − a*_s)),
    a*_t = Σ_{s ≤ t} log a_s, h_0 the state carried in from the previous window.

It runs in float32 whatever the autocast (cumulative sums in bf16 lose the digits that matter).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charlstm.cells.base import gate_count


def scan_log(log_a: Tensor, log_b: Tensor, h0: Tensor) -> Tensor:
    """log_a, log_b (B, T, H), h0 (B, H) -> h (B, T, H), h_t = a_t h_{t−1} + b_t.

    The carried state enters linearly, h_t = A_t h0 + (the scan from zero), A_t = exp(a*_t),
    so h0 may have any sign (and a zero state needs no log 0: no NaN gradients)."""
    dtype = torch.promote_types(log_a.dtype, torch.float32)  # float64 stays (the tests)
    log_a, log_b = log_a.to(dtype), log_b.to(dtype)
    a_star = torch.cumsum(log_a, dim=1)  # (B, T, H), log of a_1 ⋯ a_t
    from_zero = (a_star + torch.logcumsumexp(log_b - a_star, dim=1)).exp()
    return from_zero + a_star.exp() * h0.to(dtype)[:, None]


class ParallelLayer(nn.Module):
    """A `num_layers`-deep stack of a PARALLEL cell (its file in cells/ gives `log_terms`),
    batch_first and called like torch's nn.GRU: `out, h = layer(x, h)`, h (L, B, H) or None.

    Each layer k stores the step layout's w_x and b under our layers' names (model/weights.py):

        weight_x_l{k}  (I, G·H)    x @ weight_x + bias = zx (B, T, G·H): one multiply a window,
        bias_l{k}      (G·H,)      then log_terms(zx) and the scan give every h_t at once

    There is no recurrent matrix: the gates read x_t alone. The scan and log_terms run in
    float32 under autocast (the projection keeps autocast's precision).
    """

    def __init__(
        self, cell: Any, input_size: int, hidden_size: int, num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.cell = cell
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.dropout = num_layers, dropout
        self.batch_first = True  # the only layout we support; here so callers can check
        gh = gate_count(cell) * hidden_size
        for k in range(num_layers):
            in_k = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_x_l{k}", nn.Parameter(torch.empty(in_k, gh)))
            self.register_parameter(f"bias_l{k}", nn.Parameter(torch.empty(gh)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)  # torch's init for its recurrent layers
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        return (f"{self.cell.NAME}, {self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}, dropout={self.dropout}")  # fmt: skip

    def forward(self, x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"expected input (B, T, {self.input_size}), got {tuple(x.shape)}")
        b, t, _ = x.shape
        if h is None:
            h = x.new_zeros(self.num_layers, b, self.hidden_size)
        finals = []
        for k in range(self.num_layers):
            if k > 0 and self.training and self.dropout > 0:
                x = F.dropout(x, self.dropout, training=True)
            w_x, bias = getattr(self, f"weight_x_l{k}"), getattr(self, f"bias_l{k}")
            zx = torch.addmm(bias, x.reshape(b * t, -1), w_x).view(b, t, -1)  # (B, T, G·H)
            with torch.autocast(x.device.type, enabled=False):
                zx = zx.to(torch.promote_types(zx.dtype, torch.float32))
                x = scan_log(*self.cell.log_terms(zx), h[k])  # (B, T, H)
            finals.append(x[:, -1])
        return x, torch.stack(finals)
