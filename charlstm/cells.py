"""The recurrent layers of the LSTM family, and the fast one-token step that sampling runs on.

Every layer here is batch_first and is called like torch's own:

    out, state = layer(x, state)    # x (B, T, I) -> out (B, T, H)

where `state` is `(h, c)`, each (L, B, H), for the cells with a memory cell
(lstm, peephole, coupled), a single h (L, B, H) for gru and rnn, and `None` means zeros.

lstm / gru / rnn are torch's fused modules. peephole and coupled are ours
(`PeepholeLSTM`, `CoupledLSTM`): one matrix multiply projects a whole window's input,
then a Python loop over time does the recurrent part.

`make_stepper` turns any of them into a `Stepper` that advances one token at a time
(x (B, I) -> out (B, H)) for sampling, an order of magnitude faster at batch 1 than
calling the layer on one-step windows. The `*_reference_step` functions are the gate
equations written out line by line; the tests hold torch's modules and ours against them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charlstm.config import CELLS

# The cells whose state is a pair (h, c); the others carry h alone.
CELLS_WITH_MEMORY = ("lstm", "peephole", "coupled")

State = Tensor | tuple[Tensor, Tensor]


def _check_cell(cell: str) -> None:
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(CELLS)}")


def make_recurrent(
    cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float
) -> nn.Module:
    """A `num_layers`-deep batch_first recurrent layer of kind `cell` (one of CELLS).

    `dropout` applies to the outputs of every layer but the last, only in training mode.
    """
    _check_cell(cell)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    # torch warns when dropout is set on a single layer, where it has nothing to act on.
    dropout = dropout if num_layers > 1 else 0.0
    if cell == "lstm":
        return nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, dropout=dropout)
    if cell == "gru":
        return nn.GRU(input_size, hidden_size, num_layers, batch_first=True, dropout=dropout)
    if cell == "rnn":
        return nn.RNN(
            input_size,
            hidden_size,
            num_layers,
            nonlinearity="tanh",
            batch_first=True,
            dropout=dropout,
        )
    if cell == "peephole":
        return PeepholeLSTM(input_size, hidden_size, num_layers, dropout)
    return CoupledLSTM(input_size, hidden_size, num_layers, dropout)


def init_state(
    cell: str,
    num_layers: int,
    batch: int,
    hidden: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> State:
    """The zero state: `(h, c)` for cells with a memory cell, else `h`; each (L, B, H)."""
    _check_cell(cell)
    h = torch.zeros(num_layers, batch, hidden, device=device, dtype=dtype)
    return (h, torch.zeros_like(h)) if cell in CELLS_WITH_MEMORY else h


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
#   PeepholeLSTM: G = 4, blocks [ i | f | g | o ], plus peephole_l{k} (3, H) = rows p_i, p_f, p_o
#   CoupledLSTM:  G = 3, blocks [ f | o | g ]   (no input gate: i = 1 - f)
#
# The names differ from torch's weight_ih_l{k} on purpose: torch stores (G·H, I), and code
# that edits torch's layout by name must not silently hit ours.


class _OwnLSTM(nn.Module):
    """What PeepholeLSTM and CoupledLSTM share: parameters, state handling, stacking, dropout."""

    gates: int  # G, gate blocks per layer
    forget_block: int  # which block holds the forget gate
    peepholes: bool = False

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
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
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch's initialisation for its recurrent layers: uniform ±1/sqrt(H) everywhere ...
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        # ... except the forget-gate bias, which starts at 1 so that early in training the
        # cell keeps its memory and gradients reach back further (Jozefowicz et al., 2015).
        h = self.hidden_size
        with torch.no_grad():
            for k in range(self.num_layers):
                b = getattr(self, f"bias_l{k}")
                b[self.forget_block * h : (self.forget_block + 1) * h].fill_(1.0)

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

    @staticmethod
    def _scan(
        xw: Tensor, h: Tensor, c: Tensor, w_h: Tensor, peep: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run one layer over a window: xw (B, T, G·H), h and c (B, H) -> out (B, T, H), h, c."""
        raise NotImplementedError

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"expected input (B, T, {self.input_size}), got {tuple(x.shape)}")
        b, t, _ = x.shape
        if state is None:
            h0 = c0 = x.new_zeros(self.num_layers, b, self.hidden_size)
        else:
            h0, c0 = state  # (L, B, H) each
        h_last, c_last = [], []
        for k in range(self.num_layers):
            if k > 0 and self.training and self.dropout > 0:
                x = F.dropout(x, self.dropout, training=True)
            w_x, w_h, bias, peep = self.layer_weights(k)
            # The whole window's input projection in one multiply: (B·T, I) @ (I, G·H).
            xw = torch.addmm(bias, x.reshape(b * t, -1), w_x).view(b, t, -1)  # (B, T, G·H)
            x, h, c = self._scan(xw, h0[k], c0[k], w_h, peep)  # x (B, T, H)
            h_last.append(h)
            c_last.append(c)
        return x, (torch.stack(h_last), torch.stack(c_last))


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
        xw: Tensor, h: Tensor, c: Tensor, w_h: Tensor, peep: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        assert peep is not None
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
        return torch.stack(outs, dim=1), h, c


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
        xw: Tensor, h: Tensor, c: Tensor, w_h: Tensor, peep: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        hidden = h.shape[-1]
        outs = []
        for xw_t in xw.unbind(1):  # (B, 3H)
            z_f, z_o, z_g = torch.addmm(xw_t, h, w_h).split(hidden, dim=1)  # (B, H) each
            f = torch.sigmoid(z_f)
            g = torch.tanh(z_g)
            c = torch.lerp(g, c, f)  # g + f ⊙ (c − g) = f ⊙ c + (1 − f) ⊙ g, one kernel
            h = torch.sigmoid(z_o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, dim=1), h, c


# --------------------------------------------------------------------------------------
# Reference cells: the equations, line by line, for tests
# --------------------------------------------------------------------------------------
#
# Weights follow the equations' convention: W_* (H, I) and U_* (H, H) multiply a column
# vector from the left, so on a batch of rows x (B, I) the term W x is x @ W.T.


def lstm_reference_step(
    x: Tensor, h: Tensor, c: Tensor, W: dict[str, Tensor]
) -> tuple[Tensor, Tensor]:
    """One LSTM step, x (B, I), h and c (B, H) -> (h, c); W has W_f, U_f, b_f, ... for f i c o."""
    f = torch.sigmoid(x @ W["W_f"].T + h @ W["U_f"].T + W["b_f"])  # forget
    i = torch.sigmoid(x @ W["W_i"].T + h @ W["U_i"].T + W["b_i"])  # input
    c_tilde = torch.tanh(x @ W["W_c"].T + h @ W["U_c"].T + W["b_c"])  # candidate
    o = torch.sigmoid(x @ W["W_o"].T + h @ W["U_o"].T + W["b_o"])  # output
    c = f * c + i * c_tilde
    h = o * torch.tanh(c)
    return h, c


def lstm_weights_from_torch(lstm: nn.LSTM, layer: int) -> dict[str, Tensor]:
    """Layer `layer` of an nn.LSTM under the equations' names.

    torch stacks the four gates as row blocks in the order (i, f, g, o), g being the
    candidate c̃, and keeps two biases that only ever appear summed:

        weight_ih_l{k} (4H, I) = [W_i; W_f; W_c; W_o]
        weight_hh_l{k} (4H, H) = [U_i; U_f; U_c; U_o]
        bias_ih_l{k} + bias_hh_l{k} (4H,) = [b_i; b_f; b_c; b_o]

    The entries are differentiable views of the module's parameters, so a loss computed
    through `lstm_reference_step` puts its gradients in `lstm.weight_ih_l0.grad` etc.
    """
    if lstm.proj_size:
        raise ValueError("LSTMs with proj_size are not covered")
    w_ih = getattr(lstm, f"weight_ih_l{layer}")
    w_hh = getattr(lstm, f"weight_hh_l{layer}")
    if lstm.bias:
        b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
    else:
        b = w_ih.new_zeros(w_ih.shape[0])
    W: dict[str, Tensor] = {}
    for gate, wi, wh, bg in zip("ifco", w_ih.chunk(4), w_hh.chunk(4), b.chunk(4), strict=True):
        W[f"W_{gate}"], W[f"U_{gate}"], W[f"b_{gate}"] = wi, wh, bg
    return W


def gru_reference_step(x: Tensor, h: Tensor, W: dict[str, Tensor]) -> Tensor:
    """One GRU step, x (B, I), h (B, H) -> h, in the textbook form:

    z_t = σ(W_z x_t + U_z h_{t−1} + b_z)                      update
    r_t = σ(W_r x_t + U_r h_{t−1} + b_r)                      reset
    n_t = tanh(W_n x_t + b_in + r_t ⊙ (U_n h_{t−1} + b_hn))   candidate h̃_t (torch's variant:
                                                              the reset gate also scales b_hn)
    h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ n_t
    """
    z = torch.sigmoid(x @ W["W_z"].T + h @ W["U_z"].T + W["b_z"])
    r = torch.sigmoid(x @ W["W_r"].T + h @ W["U_r"].T + W["b_r"])
    n = torch.tanh(x @ W["W_n"].T + W["b_in"] + r * (h @ W["U_n"].T + W["b_hn"]))
    return (1 - z) * h + z * n


def gru_weights_from_torch(gru: nn.GRU, layer: int) -> dict[str, Tensor]:
    """Layer `layer` of an nn.GRU under `gru_reference_step`'s names.

    torch stacks the gates as row blocks (r, z, n) and computes
    h_t = (1 − z') ⊙ n_t + z' ⊙ h_{t−1}: its z' keeps the old state, where the textbook z
    takes the new one. So z = 1 − z' = 1 − σ(a) = σ(−a), and the update gate's weights and
    biases come out negated. Only b_hn must stay apart from b_in (it sits inside r ⊙ ...);
    the r and z biases only ever appear summed.

    The entries are differentiable views of the module's parameters (see
    `lstm_weights_from_torch`).
    """
    w_ir, w_iz, w_in = getattr(gru, f"weight_ih_l{layer}").chunk(3)  # (H, I) each
    w_hr, w_hz, w_hn = getattr(gru, f"weight_hh_l{layer}").chunk(3)  # (H, H) each
    if gru.bias:
        b_ir, b_iz, b_in = getattr(gru, f"bias_ih_l{layer}").chunk(3)
        b_hr, b_hz, b_hn = getattr(gru, f"bias_hh_l{layer}").chunk(3)
    else:
        b_ir = b_iz = b_in = b_hr = b_hz = b_hn = w_ir.new_zeros(w_ir.shape[0])
    return {
        "W_z": -w_iz,
        "U_z": -w_hz,
        "b_z": -(b_iz + b_hz),
        "W_r": w_ir,
        "U_r": w_hr,
        "b_r": b_ir + b_hr,
        "W_n": w_in,
        "U_n": w_hn,
        "b_in": b_in,
        "b_hn": b_hn,
    }


# --------------------------------------------------------------------------------------
# The fast single-step path
# --------------------------------------------------------------------------------------
#
# Calling nn.LSTM on a (B, 1, I) window costs milliseconds at 2×512 on CPU, nearly all
# of it oneDNN setting up a sequence kernel for a single step. A step here is, per layer,
# two addmm's into a preallocated gate buffer (B, G·H) and a handful of in-place
# elementwise kernels on views of it, under inference_mode. At batch 1 the time then goes
# to streaming the weights from memory (16 MB per step at 2×512, fp32).
#
# Gate blocks are reordered when the weights are copied so that all sigmoid gates sit
# side by side and take one kernel:
#
#   lstm      torch's [ i | f | g | o ]  ->  [ i | f | o | g ]   sigmoid on 3H, tanh on H
#   coupled   [ f | o | g ]   (already)                           sigmoid on 2H, tanh on H
#   peephole  [ i | f | g | o ]  (kept: o needs c_t first)        sigmoid on 2H, tanh on H, then o
#   gru       torch's [ r | z | n ], input and hidden projections apart (r multiplies only U_n h)
#   rnn       one block


def _blocks(w: Tensor, order: tuple[int, ...], n: int) -> Tensor:
    """Reorder the n equal gate blocks along dim 0 of w (torch's (G·H, ...) layout)."""
    blocks = w.chunk(n)
    return torch.cat([blocks[k] for k in order])


class _LayerStep:
    """One layer's weights, copied for the step, and scratch for its gate pre-activations.

    `resize(B)` (re)allocates the scratch and the views of it that `__call__` works on, so
    a step slices nothing; `__call__` writes the layer's new h (and c) into the given slots.
    """

    def __init__(self, w_x: Tensor, w_h: Tensor, bias: Tensor, peep: Tensor | None = None) -> None:
        # Copies, not views: the stepper keeps the weights it was built from.
        self.w_x = w_x.detach().contiguous().clone()  # (I, G·H)
        self.w_h = w_h.detach().contiguous().clone()  # (H, G·H)
        self.bias = bias.detach().contiguous().clone()  # (G·H,)
        self.peep = None if peep is None else peep.detach().clone()  # (3, H)
        self.hidden = self.w_h.shape[0]

    def resize(self, batch: int) -> None:
        self.z = self.w_x.new_empty(batch, self.w_x.shape[1])  # (B, G·H)


class _LSTMStep(_LayerStep):
    def resize(self, batch: int) -> None:
        super().resize(batch)
        hid, z = self.hidden, self.z  # blocks [ i | f | o | g ]
        self.sig, self.cand = z[:, : 3 * hid], z[:, 3 * hid :]
        self.i, self.f, self.o, _ = z.split(hid, dim=1)

    def __call__(self, x: Tensor, h: Tensor, c: Tensor, h_out: Tensor, c_out: Tensor) -> None:
        torch.addmm(self.bias, x, self.w_x, out=self.z)
        self.z.addmm_(h, self.w_h)
        self.sig.sigmoid_()
        self.cand.tanh_()
        torch.mul(self.f, c, out=c_out)
        c_out.addcmul_(self.i, self.cand)
        torch.tanh(c_out, out=h_out).mul_(self.o)


class _PeepholeStep(_LayerStep):
    def resize(self, batch: int) -> None:
        super().resize(batch)
        hid, z = self.hidden, self.z  # blocks [ i | f | g | o ]
        self.i, self.f, self.cand, self.o = z.split(hid, dim=1)
        self.sig = z[:, : 2 * hid]
        self.p_i, self.p_f, self.p_o = self.peep.unbind(0)

    def __call__(self, x: Tensor, h: Tensor, c: Tensor, h_out: Tensor, c_out: Tensor) -> None:
        torch.addmm(self.bias, x, self.w_x, out=self.z)
        self.z.addmm_(h, self.w_h)
        self.i.addcmul_(c, self.p_i)
        self.f.addcmul_(c, self.p_f)
        self.sig.sigmoid_()
        self.cand.tanh_()
        torch.mul(self.f, c, out=c_out)
        c_out.addcmul_(self.i, self.cand)
        self.o.addcmul_(c_out, self.p_o).sigmoid_()  # o sees the new cell
        torch.tanh(c_out, out=h_out).mul_(self.o)


class _CoupledStep(_LayerStep):
    def resize(self, batch: int) -> None:
        super().resize(batch)
        hid, z = self.hidden, self.z  # blocks [ f | o | g ]
        self.sig, self.cand = z[:, : 2 * hid], z[:, 2 * hid :]
        self.f, self.o, _ = z.split(hid, dim=1)

    def __call__(self, x: Tensor, h: Tensor, c: Tensor, h_out: Tensor, c_out: Tensor) -> None:
        torch.addmm(self.bias, x, self.w_x, out=self.z)
        self.z.addmm_(h, self.w_h)
        self.sig.sigmoid_()
        self.cand.tanh_()
        torch.lerp(self.cand, c, self.f, out=c_out)  # f ⊙ c + (1 − f) ⊙ g
        torch.tanh(c_out, out=h_out).mul_(self.o)


class _GRUStep(_LayerStep):
    """torch's GRU: `bias` is bias_ih and `bias_h` bias_hh, (3H,) each, apart because of b_hn."""

    def __init__(self, w_x: Tensor, w_h: Tensor, bias: Tensor, bias_h: Tensor) -> None:
        super().__init__(w_x, w_h, bias)
        self.bias_h = bias_h.detach().contiguous().clone()

    def resize(self, batch: int) -> None:
        super().resize(batch)  # z: the input projection (B, 3H), blocks [ r | z | n ]
        self.zh = self.w_h.new_empty(batch, self.w_h.shape[1])  # the hidden one (B, 3H)
        hid = self.hidden
        self.rz, self.n = self.z[:, : 2 * hid], self.z[:, 2 * hid :]
        self.rz_h, self.n_h = self.zh[:, : 2 * hid], self.zh[:, 2 * hid :]
        self.r, self.update = self.z[:, :hid], self.z[:, hid : 2 * hid]

    def __call__(self, x: Tensor, h: Tensor, h_out: Tensor) -> None:
        torch.addmm(self.bias, x, self.w_x, out=self.z)
        torch.addmm(self.bias_h, h, self.w_h, out=self.zh)
        self.rz.add_(self.rz_h).sigmoid_()
        self.n.addcmul_(self.r, self.n_h).tanh_()
        torch.lerp(self.n, h, self.update, out=h_out)  # torch's (1 − z') ⊙ n + z' ⊙ h


class _RNNStep(_LayerStep):
    def resize(self, batch: int) -> None:
        pass  # no gates to park: the step writes straight into the new state

    def __call__(self, x: Tensor, h: Tensor, h_out: Tensor) -> None:
        torch.addmm(self.bias, x, self.w_x, out=h_out)
        h_out.addmm_(h, self.w_h).tanh_()


def _torch_layer_steps(cell: str, layer: nn.Module) -> list[_LayerStep]:
    """Per-layer step weights from torch's nn.LSTM / nn.GRU / nn.RNN."""
    expected = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
    if type(layer) is not expected:
        raise TypeError(f"cell {cell!r} needs an {expected.__name__}, got {type(layer).__name__}")
    if layer.bidirectional or getattr(layer, "proj_size", 0):
        raise ValueError("bidirectional layers and proj_size are not supported")
    if cell == "rnn" and layer.nonlinearity != "tanh":
        raise ValueError("only tanh RNNs are supported")
    steps: list[_LayerStep] = []
    for k in range(layer.num_layers):
        w_ih = getattr(layer, f"weight_ih_l{k}")  # (G·H, I)
        w_hh = getattr(layer, f"weight_hh_l{k}")  # (G·H, H)
        if layer.bias:
            b_ih, b_hh = getattr(layer, f"bias_ih_l{k}"), getattr(layer, f"bias_hh_l{k}")
        else:
            b_ih = b_hh = w_ih.new_zeros(w_ih.shape[0])
        if cell == "lstm":
            order = (0, 1, 3, 2)  # (i, f, g, o) -> (i, f, o, g)
            steps.append(
                _LSTMStep(
                    _blocks(w_ih, order, 4).T,
                    _blocks(w_hh, order, 4).T,
                    _blocks(b_ih + b_hh, order, 4),
                )
            )
        elif cell == "gru":
            steps.append(_GRUStep(w_ih.T, w_hh.T, b_ih, b_hh))
        else:
            steps.append(_RNNStep(w_ih.T, w_hh.T, b_ih + b_hh))
    return steps


class Stepper:
    """Advances a recurrent layer one token at a time, for sampling.

        stepper = make_stepper("lstm", layer)
        out, state = stepper.step(x, state)    # x (B, I) -> out (B, H); state as the layer's

    Always in eval mode (no dropout) and under inference_mode. The weights are copied when
    the stepper is built: build it after loading or training, and again if they change.
    Each call returns a fresh state and never writes to the one passed in, so a state can
    be kept and stepped from twice (e.g. a primed state reused for several samples); `out`
    is a view of the new h. Returned tensors are inference tensors: fine to sample from,
    not to backpropagate through. One stepper must not be used from two threads at once
    (its gate buffers are shared between calls).
    """

    def __init__(self, cell: str, layer: nn.Module) -> None:
        _check_cell(cell)
        self.cell = cell
        self.has_memory = cell in CELLS_WITH_MEMORY
        with torch.no_grad():
            if cell in ("peephole", "coupled"):
                expected = PeepholeLSTM if cell == "peephole" else CoupledLSTM
                if not isinstance(layer, expected):
                    raise TypeError(
                        f"cell {cell!r} needs a {expected.__name__}, got {type(layer).__name__}"
                    )
                kind = _PeepholeStep if cell == "peephole" else _CoupledStep
                self.layers = [kind(*layer.layer_weights(k)) for k in range(layer.num_layers)]
            else:
                self.layers = _torch_layer_steps(cell, layer)
        self.num_layers = len(self.layers)
        self.hidden_size = self.layers[0].hidden
        self.input_size = self.layers[0].w_x.shape[0]
        self.batch = -1

    def init_state(self, batch: int) -> State:
        """The zero state for `batch` rows, on the weights' device and dtype."""
        w = self.layers[0].w_x
        return init_state(self.cell, self.num_layers, batch, self.hidden_size, w.device, w.dtype)

    def step(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One token through every layer: x (B, I) -> (out (B, H), new state)."""
        with torch.inference_mode():
            batch = x.shape[0]
            if batch != self.batch:  # gate buffers are sized by batch; resize rarely
                for layer in self.layers:
                    layer.resize(batch)
                self.batch = batch
            if state is None:
                state = self.init_state(batch)
            if self.has_memory:
                h, c = state  # (L, B, H) each
                h_new, c_new = torch.empty_like(h), torch.empty_like(c)
                hs, cs = h.unbind(0), c.unbind(0)
                h_outs, c_outs = h_new.unbind(0), c_new.unbind(0)
                for k, layer in enumerate(self.layers):
                    layer(x, hs[k], cs[k], h_outs[k], c_outs[k])
                    x = h_outs[k]  # the next layer's input; no dropout when sampling
                return x, (h_new, c_new)
            h = state  # (L, B, H)
            h_new = torch.empty_like(h)
            hs, h_outs = h.unbind(0), h_new.unbind(0)
            for k, layer in enumerate(self.layers):
                layer(x, hs[k], h_outs[k])
                x = h_outs[k]
            return x, h_new


def make_stepper(cell: str, layer: nn.Module) -> Stepper:
    """A `Stepper` over a layer from `make_recurrent(cell, ...)`, built from its current weights."""
    return Stepper(cell, layer)
