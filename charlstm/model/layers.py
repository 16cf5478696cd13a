"""The recurrent layers of the LSTM family, and their equations written out line by line.

Every layer here is batch_first and is called like torch's own:

    out, layer_state = layer(x, layer_state)    # x (B, T, I) -> out (B, T, H)

where torch's convention for the state is `(h, c)`, each (L, B, H), for the LSTMs, a single h
(L, B, H) for gru and rnn, and `None` means zeros. Above this module the state is always a
`State`, a tuple with h first: (h,), (h, c), or (h, c, n, m) for slstm (STATE_PARTS);
`run_layer` translates.

lstm / gru / rnn are torch's fused modules. peephole, coupled, mogrifier and slstm are ours
(`PeepholeLSTM`, `CoupledLSTM`, `MogrifierLSTM`, `SLSTM`): a Python loop over time does the
recurrent part; where the gates are linear in the input (all but the Mogrifier, whose input is
modulated by h_{t−1} first), one matrix multiply projects a whole window's input before it.

Each cell's equations are written once, in its file in cells/; the tests hold torch's modules
and ours against that step (tests/test_cells.py), and the engines run it (generate/).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charlstm.cells import CELLS

# How many parts a layer's state holds, by cell (the cell's STATE: h first; c for the LSTMs;
# the sLSTM adds its normaliser n and stabiliser m). Every part is (L, B, H).
STATE_PARTS = {name: len(cell.STATE) for name, cell in CELLS.items()}
# The Mogrifier's rounds of mutual gating when not given: the paper's recommendation for LSTMs.
MOGRIFIER_ROUNDS = 5

# The recurrent state of a model: a tuple, h first, each part (L, B, H).
State = tuple[Tensor, ...]


def make_recurrent(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    dropout: float,
    rounds: int = MOGRIFIER_ROUNDS,
) -> nn.Module:
    """A `num_layers`-deep batch_first recurrent layer of kind `cell` (one of config.CELLS).

    `dropout` applies to the outputs of every layer but the last, only in training mode;
    `rounds` is the Mogrifier's number of mutual-gating rounds (other cells ignore it).
    """
    # torch warns when dropout is set on a single layer, where it has nothing to act on.
    dropout = dropout if num_layers > 1 else 0.0
    kinds: dict[str, type[nn.Module]] = {
        "lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN,
        "peephole": PeepholeLSTM, "coupled": CoupledLSTM, "mogrifier": MogrifierLSTM,
        "slstm": SLSTM,
    }  # fmt: skip
    if cell not in kinds:
        raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(kinds)}")
    if cell in ("lstm", "gru", "rnn"):
        return kinds[cell](input_size, hidden_size, num_layers, batch_first=True, dropout=dropout)
    if cell == "mogrifier":
        return MogrifierLSTM(input_size, hidden_size, num_layers, dropout, rounds=rounds)
    return kinds[cell](input_size, hidden_size, num_layers, dropout)


def zero_state(
    cell: str,
    num_layers: int,
    batch: int,
    hidden: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> State:
    """The zero state: a tuple of STATE_PARTS[cell] zero tensors, each (L, B, H)."""
    return tuple(
        torch.zeros(num_layers, batch, hidden, device=device, dtype=dtype)
        for _ in range(STATE_PARTS[cell])
    )


def run_layer(cell: str, layer: nn.Module, x: Tensor, state: State | None) -> tuple[Tensor, State]:
    """Call a layer from `make_recurrent` with a `State`, translating torch's convention."""
    out, new = layer(x, state if state is None or STATE_PARTS[cell] > 1 else state[0])
    return out, (new if isinstance(new, tuple) else (new,))


def detach_state(state: State) -> State:
    """Cut the graph between truncated-BPTT windows while keeping the values."""
    return tuple(s.detach() for s in state)


# --------------------------------------------------------------------------------------
# Our own LSTM variants
# --------------------------------------------------------------------------------------
#
# Each layer k stores its weights already transposed, gate blocks side by side, so a
# whole window's input projection is one (B·T, I) @ (I, G·H) matrix multiply:
#
#   weight_x_l{k}  (I, G·H)     x_t  @ weight_x  ┐
#   weight_h_l{k}  (H, G·H)     h_t-1 @ weight_h ├─> z (B, G·H) = [ gate 0 | gate 1 | ... ]
#   bias_l{k}      (G·H,)       + bias           ┘                  <- H ->
#
#   PeepholeLSTM:  G = 4, blocks [ i | f | g | o ], plus peephole_l{k} (3, H) = rows p_i, p_f, p_o
#   CoupledLSTM:   G = 3, blocks [ f | o | g ]   (no input gate: i = 1 - f)
#   MogrifierLSTM: G = 4, blocks [ i | f | o | g ], plus mogrifier_q_l{k} (⌈r/2⌉, H, I) and
#                  mogrifier_r_l{k} (⌊r/2⌋, I, H): the Q and R of the odd and even rounds,
#                  transposed like the rest (x ← 2σ(h @ q) ⊙ x, h ← 2σ(x @ r) ⊙ h)
#   SLSTM:         G = 4, blocks [ i | f | z | o ]   (xLSTM's order)
#
# The names differ from torch's weight_ih_l{k} on purpose: torch stores (G·H, I), and code
# that edits torch's layout by name must not silently hit ours.


class _OwnLSTM(nn.Module):
    """What our LSTMs share: parameters, state handling, stacking, dropout."""

    gates: int  # G, gate blocks per layer
    forget_block: int  # which block holds the forget gate
    peepholes: bool = False
    state_parts: int = 2  # (h, c)

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.batch_first = True  # the only layout we support; here so callers can check
        gh = self.gates * hidden_size
        for k in range(num_layers):
            in_k = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_x_l{k}", nn.Parameter(torch.empty(in_k, gh)))
            self.register_parameter(f"weight_h_l{k}", nn.Parameter(torch.empty(hidden_size, gh)))
            self.register_parameter(f"bias_l{k}", nn.Parameter(torch.empty(gh)))
            if self.peepholes:
                self.register_parameter(f"peephole_l{k}", nn.Parameter(torch.empty(3, hidden_size)))
            self._extra_parameters(k, in_k)
        self.reset_parameters()

    def _extra_parameters(self, k: int, in_k: int) -> None:
        """Register layer k's parameters beyond the gates' (the Mogrifier's Q and R)."""

    def reset_parameters(self) -> None:
        # torch's initialisation for its recurrent layers: uniform ±1/sqrt(H) everywhere ...
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        # ... except the forget-gate bias, which starts high so that early in training the
        # cell keeps its memory and gradients reach back further (Jozefowicz et al., 2015).
        h = self.hidden_size
        with torch.no_grad():
            for k in range(self.num_layers):
                b = getattr(self, f"bias_l{k}")
                self._init_forget_bias(b[self.forget_block * h : (self.forget_block + 1) * h])

    def _init_forget_bias(self, b: Tensor) -> None:
        b.fill_(1.0)

    def layer_weights(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Layer k's weight_x (I, G·H), weight_h (H, G·H), bias (G·H,), peephole (3, H) | None."""
        peep = getattr(self, f"peephole_l{k}") if self.peepholes else None
        return (
            getattr(self, f"weight_x_l{k}"),
            getattr(self, f"weight_h_l{k}"),
            getattr(self, f"bias_l{k}"),
            peep,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"dropout={self.dropout}"
        )

    def _layer(self, k: int, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple]:
        """Run layer k over a window: x (B, T, I), its state (B, H) each -> out (B, T, H) and
        the final state. Here: the whole window's input projection in one multiply, then the
        recurrent loop (`_scan`)."""
        b, t, _ = x.shape
        w_x, w_h, bias, peep = self.layer_weights(k)
        xw = torch.addmm(bias, x.reshape(b * t, -1), w_x).view(b, t, -1)  # (B, T, G·H)
        return self._scan(xw, state, w_h, peep)

    @staticmethod
    def _scan(
        xw: Tensor, state: tuple[Tensor, ...], w_h: Tensor, peep: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The recurrent loop over a projected window: xw (B, T, G·H) -> out (B, T, H), state."""
        raise NotImplementedError

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...] | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"expected input (B, T, {self.input_size}), got {tuple(x.shape)}")
        if state is None:
            zeros = x.new_zeros(self.num_layers, x.shape[0], self.hidden_size)
            state = (zeros,) * self.state_parts
        finals = []
        for k in range(self.num_layers):
            if k > 0 and self.training and self.dropout > 0:
                x = F.dropout(x, self.dropout, training=True)
            x, final = self._layer(k, x, tuple(part[k] for part in state))  # x (B, T, H)
            finals.append(final)
        return x, tuple(torch.stack(parts) for parts in zip(*finals, strict=True))


class PeepholeLSTM(_OwnLSTM):
    """LSTM whose gates also look at the cell (Gers & Schmidhuber, 2000), diagonal weights:

    i_t = σ(W_i x_t + U_i h_{t−1} + p_i ⊙ c_{t−1} + b_i)
    f_t = σ(W_f x_t + U_f h_{t−1} + p_f ⊙ c_{t−1} + b_f)
    c_t = f_t ⊙ c_{t−1} + i_t ⊙ tanh(W_c x_t + U_c h_{t−1} + b_c)
    o_t = σ(W_o x_t + U_o h_{t−1} + p_o ⊙ c_t + b_o)      (o sees the new cell)
    h_t = o_t ⊙ tanh(c_t)
    """

    gates = 4  # [ i | f | g | o ]
    forget_block = 1
    peepholes = True

    @staticmethod
    def _scan(
        xw: Tensor, state: tuple[Tensor, ...], w_h: Tensor, peep: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        assert peep is not None
        h, c = state
        hidden = h.shape[-1]
        p_i, p_f, p_o = peep.unbind(0)  # (H,) each
        outs = []
        # unbind, not xw[:, t]: autograd turns T slices into T full-size zero-filled grads.
        for xw_t in xw.unbind(1):  # (B, 4H)
            z_i, z_f, z_g, z_o = torch.addmm(xw_t, h, w_h).split(hidden, dim=1)  # (B, H) each
            i = torch.sigmoid(torch.addcmul(z_i, c, p_i))
            f = torch.sigmoid(torch.addcmul(z_f, c, p_f))
            c = torch.addcmul(f * c, i, torch.tanh(z_g))
            o = torch.sigmoid(torch.addcmul(z_o, c, p_o))
            h = o * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, dim=1), (h, c)


class CoupledLSTM(_OwnLSTM):
    """LSTM whose input gate is tied to the forget gate, i_t = 1 − f_t (Greff et al., 2017):

    f_t = σ(W_f x_t + U_f h_{t−1} + b_f)
    o_t = σ(W_o x_t + U_o h_{t−1} + b_o)
    c_t = f_t ⊙ c_{t−1} + (1 − f_t) ⊙ tanh(W_c x_t + U_c h_{t−1} + b_c)
    h_t = o_t ⊙ tanh(c_t)
    """

    gates = 3  # [ f | o | g ]
    forget_block = 0

    @staticmethod
    def _scan(
        xw: Tensor, state: tuple[Tensor, ...], w_h: Tensor, peep: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        h, c = state
        hidden = h.shape[-1]
        outs = []
        for xw_t in xw.unbind(1):  # (B, 3H)
            z_f, z_o, z_g = torch.addmm(xw_t, h, w_h).split(hidden, dim=1)  # (B, H) each
            f = torch.sigmoid(z_f)
            g = torch.tanh(z_g)
            # f ⊙ c + (1 − f) ⊙ g; not torch.lerp, which refuses a bf16 g (autocast) with an fp32 c
            c = g + f * (c - g)
            h = torch.sigmoid(z_o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, dim=1), (h, c)


class MogrifierLSTM(_OwnLSTM):
    """The Mogrifier LSTM (Melis, Kočiský & Blunsom, ICLR 2020): before the usual LSTM step,
    the input and the previous output gate each other for r rounds,

        x^{−1} = x_t,  h^0 = h_{t−1}
        x^i = 2σ(Q^i h^{i−1}) ⊙ x^{i−2}     for odd i in 1…r
        h^i = 2σ(R^i x^{i−1}) ⊙ h^{i−2}     for even i in 1…r

    and the LSTM then reads the last x^i and h^i in place of x_t and h_{t−1} (r = 0 is the
    plain LSTM). The factor 2 keeps randomly initialised Q and R close to the identity. Q and R
    are full matrices here: at a char model's sizes (E = 128 inputs) a rank-k factorisation
    would save few multiplications and double the kernel calls of each round.

    x_t depends on h_{t−1} before it meets the gate weights, so there is no whole-window input
    projection: each step multiplies [x↑ | h↑] by [W; U] at once.
    """

    gates = 4  # [ i | f | o | g ], the step path's order (step.py)
    forget_block = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        rounds: int = MOGRIFIER_ROUNDS,
    ) -> None:
        if rounds < 0:
            raise ValueError(f"the Mogrifier needs 0 or more rounds, got {rounds}")
        self.rounds = rounds
        super().__init__(input_size, hidden_size, num_layers, dropout)

    def __setattr__(self, name: str, value: object) -> None:
        # `rounds` is set before nn.Module.__init__ (which the parameters need); allow it.
        if name == "rounds" and "_parameters" not in self.__dict__:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def _extra_parameters(self, k: int, in_k: int) -> None:
        h, n_q, n_r = self.hidden_size, (self.rounds + 1) // 2, self.rounds // 2
        if n_q:  # none at all for 0 rounds (and no R for 1)
            self.register_parameter(f"mogrifier_q_l{k}", nn.Parameter(torch.empty(n_q, h, in_k)))
        if n_r:
            self.register_parameter(f"mogrifier_r_l{k}", nn.Parameter(torch.empty(n_r, in_k, h)))

    def mogrifier_weights(self, k: int) -> tuple[Tensor, Tensor]:
        """Layer k's q (⌈r/2⌉, H, I) and r (⌊r/2⌋, I, H): round i uses q[(i − 1) // 2] when odd,
        r[i // 2 − 1] when even."""
        in_k, h = self.input_size if k == 0 else self.hidden_size, self.hidden_size
        q = getattr(self, f"mogrifier_q_l{k}", None)
        r = getattr(self, f"mogrifier_r_l{k}", None)
        w = self.weight_h_l0
        return (w.new_zeros(0, h, in_k) if q is None else q,
                w.new_zeros(0, in_k, h) if r is None else r)  # fmt: skip

    def extra_repr(self) -> str:
        return super().extra_repr() + f", rounds={self.rounds}"

    def _layer(self, k: int, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple]:
        w_x, w_h, bias, _ = self.layer_weights(k)
        q, r = self.mogrifier_weights(k)
        h, c = state
        hidden = self.hidden_size
        # Cast once a window, not once a step: autocast caches the casts of parameters only,
        # and these are views of them. Unbound, so that each round's weight gathers its
        # gradient over the window before it reaches the parameter.
        dtype = _autocast_dtype(x)
        w = torch.cat([w_x, w_h]).to(dtype)  # (I + H, 4H): [x↑ | h↑] @ w, one multiply a step
        qs, rs = q.to(dtype).unbind(0), r.to(dtype).unbind(0)
        outs = []
        for x_t in x.unbind(1):  # (B, I)
            x_t, h_m = mogrify(x_t, h, qs, rs, self.rounds)
            z = torch.addmm(bias, torch.cat([x_t, h_m], dim=1), w)  # (B, 4H)
            sig = torch.sigmoid(z[:, : 3 * hidden])
            i, f, o = sig.split(hidden, dim=1)
            c = torch.addcmul(f * c, i, torch.tanh(z[:, 3 * hidden :]))
            h = o * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, dim=1), (h, c)


def _autocast_dtype(x: Tensor) -> torch.dtype:
    """The dtype matrix products run in here: autocast's where it is on, else x's."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def mogrify(
    x: Tensor, h: Tensor, q: Tensor | tuple[Tensor, ...], r: Tensor | tuple[Tensor, ...],
    rounds: int,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The Mogrifier's rounds on x (B, I) and h (B, H), in our transposed storage -> x↑, h↑."""
    for i in range(1, rounds + 1):
        if i % 2:
            x = 2 * torch.sigmoid(h @ q[(i - 1) // 2]) * x
        else:
            h = 2 * torch.sigmoid(x @ r[i // 2 - 1]) * h
    return x, h


class SLSTM(_OwnLSTM):
    """The sLSTM of xLSTM (Beck et al., NeurIPS 2024), in its stabilised form (eqs. 8-17):

        z_t = tanh(W_z x_t + R_z h_{t−1} + b_z)          cell input
        ĩ_t = W_i x_t + R_i h_{t−1} + b_i                 input gate, exponential: i_t = exp(ĩ_t)
        f̃_t = W_f x_t + R_f h_{t−1} + b_f                 forget gate: f_t = σ(f̃_t)
        o_t = σ(W_o x_t + R_o h_{t−1} + b_o)              output gate
        m_t = max(log f_t + m_{t−1}, ĩ_t)                 stabiliser
        i'_t = exp(ĩ_t − m_t),  f'_t = exp(log f_t + m_{t−1} − m_t)
        c_t = f'_t ⊙ c_{t−1} + i'_t ⊙ z_t                 cell
        n_t = f'_t ⊙ n_{t−1} + i'_t                       normaliser
        h_t = o_t ⊙ c_t / n_t

    The state is (h, c, n, m). Because the input gate is exponential, a strong new input can
    outweigh everything stored (c and n hold a weighted average), so the cell can revise what it
    stored; m rescales c and n alike and leaves h unchanged, so it only keeps exp() in range.

    Choices, with the paper's options:
    - the forget gate is the sigmoid one (the paper allows σ or exp; xLSTM's code uses σ);
    - one head: R is a full (H, 4H) matrix rather than block-diagonal over heads. Heads suit
      the paper's GPU kernel; on a CPU at H ≤ 1024 one dense multiply per step is one kernel
      call, and every unit may mix with every other;
    - a fresh state (n = 0: the start of a text, a stream reset) takes m_t = ĩ_t, as xLSTM's
      code does, so n_t ≥ 1 from the first step on and the division is always safe;
    - the forget-gate bias starts spread over [3, 6] (xLSTM's "small_init"): long memories.

    Training treats m as a constant (no gradient through the max): h does not depend on m, so
    the gradient is the same (the tests hold it to the equations' own to 1e-5), and cheaper.
    The recurrent loop is `_SLSTMScan`, whose backward is written out by hand.
    """

    gates = 4  # [ i | f | z | o ]
    forget_block = 1
    state_parts = 4  # (h, c, n, m)

    def _init_forget_bias(self, b: Tensor) -> None:
        b.copy_(torch.linspace(3.0, 6.0, b.numel()))

    @staticmethod
    def _scan(
        xw: Tensor, state: tuple[Tensor, ...], w_h: Tensor, peep: Tensor | None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        out, *final = _SLSTMScan.apply(xw, w_h, *state)
        return out, tuple(final)


class _SLSTMScan(torch.autograd.Function):
    """The sLSTM's recurrent loop over a window, its backward written out (BPTT by hand).

    Left to autograd, each step is some twenty small operations, each recorded and replayed
    backward; here the forward runs them without a graph, keeping the gates, and the backward
    is one pass back in time, the recurrent weights' gradient one multiply over the whole
    window at the end. Matrix products run in the input's dtype (bf16 under autocast), the
    elementwise state in the state's (fp32). With m held constant (see SLSTM), per step:

        h = o ⊙ c / n:            do = dh ⊙ c/n,  dc += dh ⊙ o/n,  dn −= dh ⊙ o ⊙ c/n²
        c = f'c₋ + i'z, n = f'n₋ + i':
                                   df' = dc ⊙ c₋ + dn ⊙ n₋,  di' = dc ⊙ z + dn,  dz = dc ⊙ i'
        f' = exp(log σ(f̃) + m₋ − m),  i' = exp(ĩ − m):
                                   df̃ = df' ⊙ f' ⊙ (1 − σ(f̃)),  dĩ = di' ⊙ i'
        z = tanh(z̃), o = σ(õ):    dz̃ = dz ⊙ (1 − z²),  dõ = do ⊙ o ⊙ (1 − o)
        dh₋ = [dĩ | df̃ | dz̃ | dõ] @ Rᵀ,  dc₋ = dc ⊙ f',  dn₋ = dn ⊙ f'  (dm₀ = df' ⊙ f')
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, xw: Tensor, w_h: Tensor, h: Tensor, c: Tensor, n: Tensor, m: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        b, t, g = xw.shape
        hid, mm = g // 4, xw.dtype
        sd = torch.promote_types(c.dtype, torch.float32)  # the state's dtype
        w = w_h.to(mm)
        empty = xw.new_empty
        outs, cs, ns = (
            empty(b, t, hid, dtype=sd),
            empty(b, t, hid, dtype=sd),
            empty(b, t, hid, dtype=sd),
        )
        gates = empty(b, t, 5, hid, dtype=sd)  # i', f', z, o, σ(f̃)
        h0, c0, n0 = h.to(sd), c.to(sd), n.to(sd)
        h, c, n, m = h0, c0, n0, m.to(sd)
        for k in range(t):
            pre = torch.addmm(xw[:, k], h.to(mm), w).to(sd)  # (B, 4H)
            i_t, f_t, z_t, o_t = pre.split(hid, dim=1)
            i, f, z, o, sf = gates[:, k].unbind(1)
            log_f = F.logsigmoid(f_t).add_(m)  # log f + m₋
            m = torch.where(n > 0, torch.maximum(log_f, i_t), i_t)
            torch.exp(i_t - m, out=i)
            torch.exp(log_f.sub_(m), out=f)
            torch.tanh(z_t, out=z)
            torch.sigmoid(o_t, out=o)
            torch.sigmoid(f_t, out=sf)
            c = torch.addcmul(f * c, i, z, out=cs[:, k])
            n = torch.addcmul(i, f, n, out=ns[:, k])
            h = torch.mul(o, c, out=outs[:, k]).div_(n)
        ctx.save_for_backward(xw, w_h, h0, c0, n0, outs, cs, ns, gates)
        return outs, h.clone(), c.clone(), n.clone(), m

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, d_out: Tensor, d_h: Tensor | None, d_c: Tensor | None, d_n: Tensor | None,
        d_m: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
        xw, w_h, h0, c0, n0, outs, cs, ns, gates = ctx.saved_tensors
        b, t, hid = outs.shape
        mm, sd = xw.dtype, outs.dtype
        w_t = w_h.to(mm).T
        d_pre = xw.new_empty(b, t, 4 * hid, dtype=sd)
        zero = torch.zeros_like(h0)
        dh_rec = d_h.to(sd) if d_h is not None else zero
        dc = d_c.to(sd).clone() if d_c is not None else zero.clone()
        dn = d_n.to(sd).clone() if d_n is not None else zero.clone()
        d_out = d_out.to(sd)
        d_m0 = zero
        for k in reversed(range(t)):
            i, f, z, o, sf = gates[:, k].unbind(1)
            c, n = cs[:, k], ns[:, k]
            c_prev = cs[:, k - 1] if k else c0
            n_prev = ns[:, k - 1] if k else n0
            dh = d_out[:, k] + dh_rec
            ratio = c / n
            do = dh * ratio
            dc.addcmul_(dh, o / n)
            dn.sub_(dh * o * ratio / n)
            d_i, d_f, d_z, d_o = d_pre[:, k].split(hid, dim=1)
            df = dc * c_prev + dn * n_prev  # df'
            torch.mul(torch.addcmul(dn, dc, z), i, out=d_i)  # dĩ = di' ⊙ i'
            dlog_f = df.mul_(f)  # df' ⊙ f'
            torch.mul(dlog_f, 1 - sf, out=d_f)
            torch.mul(dc * i, 1 - z * z, out=d_z)
            torch.mul(do, o * (1 - o), out=d_o)
            dh_rec = (d_pre[:, k].to(mm) @ w_t).to(sd)
            dc.mul_(f)
            dn.mul_(f)
            if k == 0:
                d_m0 = dlog_f
        h_prev = torch.cat([h0[:, None], outs[:, :-1]], dim=1).reshape(b * t, hid)
        d_w = (h_prev.to(mm).T @ d_pre.reshape(b * t, -1).to(mm)).to(w_h.dtype)
        return d_pre.to(xw.dtype), d_w, dh_rec, dc, dn, d_m0
