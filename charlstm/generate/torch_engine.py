"""The model one token at a time: the fast path that sampling runs on, for every cell.

    stepper = Stepper(model)          # copies the weights into the step layout (below)
    stepper.start(state)              # a State, (h, ...) of (L, B, H) each, e.g. after a prime
    logits = stepper.step(tokens)     # tokens (B,) -> logits (B, V), a view of a buffer that
                                      # the next step overwrites
    state = stepper.state()           # a copy of where the B streams stand

Calling nn.LSTM on a (B, 1, I) window costs milliseconds at 2×512 on a CPU, nearly all of it
oneDNN setting up a sequence kernel for a single step. A step here is, per layer, one matrix
multiply into a preallocated gate buffer and a handful of in-place elementwise kernels, under
inference_mode; at batch 1 the time goes to streaming the weights from memory (16 MB per step
at 2×512 in fp32).

The step layout (`StepWeights`): embed (V, E); per layer k, w_x (I, G·H), w_h (H, G·H) and
b (G·H,), plus b_h (G·H,) for gru, p (3, H) for peephole, and q (⌈r/2⌉, H, I), r (⌊r/2⌋, I, H)
for mogrifier; the head w_out (H, V), b_out (V,). Gate blocks are reordered so that the
sigmoid gates sit side by side and take one kernel:

    lstm      torch's [ i | f | g | o ]  ->  [ i | f | o | g ]   sigmoid on 3H, tanh on H
    mogrifier [ i | f | o | g ]   (as stored)                     the same, after the rounds
    coupled   [ f | o | g ]   (as stored)                         sigmoid on 2H, tanh on H
    peephole  [ i | f | g | o ]  (as stored: o needs c_t first)   sigmoid on 2H, tanh on H, o
    slstm     [ i | f | z | o ]   (as stored)                     exp gates, normaliser, stabiliser
    gru       torch's [ r | z | n ]; b (input) and b_h (hidden) apart: r scales U_n h + b_hn
    rnn       one block

Two derived forms make a step cheap. Layer 0's input projection is folded into a table
(embed · w_x + b, V × G·H) when that is not much bigger than the weights it replaces, so its
step reads a row and multiplies only h (not mogrifier: its input is gated by h before the
projection). Every other layer keeps [input | own h] side by side in one buffer and multiplies
it by [w_x; w_h] at once (gru excepted: its r gate scales the hidden projection alone); the
Mogrifier's rounds rescale the two halves of that buffer in place first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charlstm.generate.numpy_engine import (
    table_fits,  # when layer 0 becomes a table: one rule for both engines
)
from charlstm.model.language_model import LanguageModel
from charlstm.model.layers import STATE_PARTS, State


@dataclass
class StepWeights:
    """A model's weights in the step layout (see the module docstring)."""

    cell: str
    embed: Tensor  # (V, E)
    layers: list[dict[str, Tensor]]  # w_x, w_h, b (+ b_h gru, p peephole, q and r mogrifier)
    w_out: Tensor | None  # (H, V); None when the head is an adaptive softmax
    b_out: Tensor | None  # (V,)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.layers[0]["w_h"].shape[0]

    @property
    def vocab_size(self) -> int:
        return self.embed.shape[0]


def step_weights(model: LanguageModel) -> StepWeights:
    """Copy a model's weights into the step layout."""
    cell, rnn = model.cfg.cell, model.rnn
    layers = []
    with torch.no_grad():
        for k in range(model.cfg.num_layers):
            if cell in ("peephole", "coupled", "mogrifier", "slstm"):
                w_x, w_h, b, p = rnn.layer_weights(k)
                layer = {"w_x": w_x, "w_h": w_h, "b": b}
                if p is not None:
                    layer["p"] = p
                if cell == "mogrifier":
                    layer["q"], layer["r"] = rnn.mogrifier_weights(k)
            else:
                w_ih, w_hh = getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")
                b_ih, b_hh = getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}")
                if cell == "lstm":  # (i, f, g, o) -> (i, f, o, g)
                    order = (0, 1, 3, 2)
                    w_ih, w_hh = _reorder(w_ih, order), _reorder(w_hh, order)
                    b_ih, b_hh = _reorder(b_ih, order), _reorder(b_hh, order)
                layer = {"w_x": w_ih.T, "w_h": w_hh.T}
                if cell == "gru":
                    layer.update(b=b_ih, b_h=b_hh)
                else:
                    layer["b"] = b_ih + b_hh
            layers.append({k: v.detach().contiguous().clone() for k, v in layer.items()})
        head = model.head
        full = isinstance(head, nn.Linear)
        return StepWeights(
            cell=cell,
            embed=model.embed.weight.detach().clone(),
            layers=layers,
            w_out=head.weight.detach().T.contiguous().clone() if full else None,
            b_out=head.bias.detach().clone() if full else None,
        )


def _reorder(w: Tensor, order: tuple[int, ...]) -> Tensor:
    """Reorder the equal gate blocks along dim 0 of w (torch's (G·H, ...) layout)."""
    blocks = w.chunk(len(order))
    return torch.cat([blocks[k] for k in order])


class Stepper:
    """Advances B streams of a model one token at a time (see the module docstring).

    Always in eval mode (no dropout) and under inference_mode. The weights are copied when the
    stepper is built: build it after loading or training, and again if they change. One
    stepper must not be used from two threads at once (its buffers are shared between steps).
    """

    def __init__(self, model: LanguageModel | StepWeights) -> None:
        w = model if isinstance(model, StepWeights) else step_weights(model)
        # An adaptive softmax has no (H, V) matrix: its log-probabilities come from the module.
        self._head: Callable[[Tensor], Tensor] | None = None
        if w.w_out is None:
            assert isinstance(model, LanguageModel), "an adaptive head needs its model"
            self._head = model.logits
        self.w = w
        self.cell = w.cell
        self.parts = STATE_PARTS[w.cell]  # h, then c (and n, m for slstm)
        hid, layer0 = w.hidden_size, w.layers[0]
        width = layer0["w_x"].shape[1]  # G·H
        self.gates = width // hid
        # The Mogrifier's layer 0 multiplies [x | h] like the others: its x is gated by h first.
        self.mogrifier = w.cell == "mogrifier"
        with torch.no_grad():
            self.table = None
            fits = table_fits(w.vocab_size, width, w.embed.numel(), layer0["w_x"].numel())
            if fits and not self.mogrifier:
                self.table = torch.addmm(layer0["b"], w.embed, layer0["w_x"])  # (V, G·H)
            # [w_x; w_h] for one multiply per layer after the first (not gru: see above).
            self.w_cat = [
                None
                if w.cell == "gru" or (k == 0 and not self.mogrifier)
                else torch.cat([layer["w_x"], layer["w_h"]])
                for k, layer in enumerate(w.layers)
            ]
        self.batch = 0

    @property
    def num_layers(self) -> int:
        return self.w.num_layers

    @property
    def hidden_size(self) -> int:
        return self.w.hidden_size

    def zero_state(self, batch: int) -> State:
        h = self.w.embed.new_zeros(self.num_layers, batch, self.hidden_size)
        return (h, *(torch.zeros_like(h) for _ in range(self.parts - 1)))

    @torch.inference_mode()
    def start(self, state: State) -> None:
        """Take `state` (copied) as where the streams stand; its batch sets B."""
        batch, hid, layers = state[0].shape[1], self.hidden_size, self.num_layers
        if batch != self.batch:
            self._allocate(batch)
        h = state[0]
        self.h0.copy_(h[0])
        for k in range(1, layers):
            self.own[k].copy_(h[k])
            if self.cell != "gru":
                self.xh[k][:, :hid].copy_(h[k - 1])
        for mine, given in zip(self.memory, state[1:], strict=True):
            mine.copy_(given)

    def state(self) -> State:
        """A copy of the current state, (L, B, H) each."""
        h = torch.stack([self.h0, *self.own[1:]]).clone()
        return (h, *(part.clone() for part in self.memory))

    def _allocate(self, batch: int) -> None:
        w, hid = self.w, self.hidden_size
        new = w.embed.new_empty
        self.batch = batch
        self.z = new(batch, self.gates * hid)  # gate pre-activations of the layer at hand
        self.zh = new(batch, self.gates * hid) if self.cell == "gru" else None
        if self.cell == "gru":
            self.h0 = new(batch, hid)  # layer 0's h
            self.xh = [None] * self.num_layers
            self.own = [self.h0] + [new(batch, hid) for _ in range(1, self.num_layers)]
        else:
            # xh[k] = [ layer k's input | layer k's own h ], the input of one multiply: for
            # k > 0 that input is layer k−1's new h; the Mogrifier's layer 0 has one too (its
            # input, an embedding row, is gated before the multiply).
            first = new(batch, w.embed.shape[1] + hid) if self.mogrifier else None
            self.xh = [first] + [new(batch, 2 * hid) for _ in range(1, self.num_layers)]
            self.own = [xh[:, -hid:] if xh is not None else new(batch, hid) for xh in self.xh]
            self.h0 = self.own[0]
        # c (and the sLSTM's n and m) of every layer.
        self.memory = [new(self.num_layers, batch, hid) for _ in range(self.parts - 1)]
        self.tanh_c = new(batch, hid)
        self.logits = new(batch, w.vocab_size) if w.w_out is not None else None

    @torch.inference_mode()
    def step(self, tokens: Tensor) -> Tensor:
        """Feed tokens (B,) to the B streams; returns the next-token logits (B, V)."""
        if self.batch == 0:
            self.start(self.zero_state(tokens.shape[0]))
        w, hid, z = self.w, self.hidden_size, self.z
        for k, layer in enumerate(w.layers):
            h = self.own[k]
            if self.mogrifier:
                xh = self.xh[k]
                if k == 0:
                    xh[:, :-hid].copy_(w.embed[tokens])
                self._mogrify(layer, xh[:, :-hid], h)
                torch.addmm(layer["b"], xh, self.w_cat[k], out=z)
            elif k == 0:  # the input projection: a row of the table, or embed · w_x + b
                if self.table is not None:
                    torch.index_select(self.table, 0, tokens, out=z)
                else:
                    torch.addmm(layer["b"], w.embed[tokens], layer["w_x"], out=z)
                if self.cell != "gru":
                    z.addmm_(h, layer["w_h"])
            elif self.cell == "gru":
                torch.addmm(layer["b"], self.own[k - 1], layer["w_x"], out=z)
            else:
                torch.addmm(layer["b"], self.xh[k], self.w_cat[k], out=z)
            self._cell(k, layer, h)
            if k + 1 < w.num_layers and self.cell != "gru":
                self.xh[k + 1][:, :hid].copy_(h)  # the next layer's input
        top = self.own[-1]
        if self._head is not None:
            return self._head(top)
        return torch.addmm(w.b_out, top, w.w_out, out=self.logits)

    @staticmethod
    def _mogrify(layer: dict[str, Tensor], x: Tensor, h: Tensor) -> None:
        """The Mogrifier's rounds, in place: x (B, I) and h (B, H) gate each other in turn."""
        q, r = layer["q"], layer["r"]
        for i in range(1, q.shape[0] + r.shape[0] + 1):
            if i % 2:  # x ← 2σ(h q) ⊙ x
                x.mul_(torch.mm(h, q[(i - 1) // 2]).sigmoid_().mul_(2))
            else:  # h ← 2σ(x r) ⊙ h
                h.mul_(torch.mm(x, r[i // 2 - 1]).sigmoid_().mul_(2))

    def _cell(self, k: int, layer: dict[str, Tensor], h: Tensor) -> None:
        """Gate pre-activations in self.z -> layer k's new state, written into h (and c, ...)."""
        z, hid = self.z, self.hidden_size
        if self.cell == "rnn":
            torch.tanh(z, out=h)
            return
        if self.cell == "gru":  # torch's GRU: h = (1 − z') ⊙ n + z' ⊙ h
            zh = self.zh
            torch.addmm(layer["b_h"], h, layer["w_h"], out=zh)
            rz, n = z[:, : 2 * hid], z[:, 2 * hid :]
            rz.add_(zh[:, : 2 * hid]).sigmoid_()
            n.addcmul_(z[:, :hid], zh[:, 2 * hid :]).tanh_()
            torch.lerp(n, h, z[:, hid : 2 * hid], out=self.tanh_c)
            h.copy_(self.tanh_c)
            return
        c = self.memory[0][k]
        if self.cell == "slstm":
            self._slstm(k, h, c)
            return
        if self.cell in ("lstm", "mogrifier"):  # [ i | f | o | g ]
            z[:, : 3 * hid].sigmoid_()
            g = z[:, 3 * hid :].tanh_()
            i, f, o = z[:, :hid], z[:, hid : 2 * hid], z[:, 2 * hid : 3 * hid]
            c.mul_(f).addcmul_(i, g)
        elif self.cell == "peephole":  # [ i | f | g | o ]; o sees the new cell
            i, f, g, o = z.split(hid, dim=1)
            p_i, p_f, p_o = layer["p"].unbind(0)
            i.addcmul_(c, p_i)
            f.addcmul_(c, p_f)
            z[:, : 2 * hid].sigmoid_()
            g.tanh_()
            c.mul_(f).addcmul_(i, g)
            o.addcmul_(c, p_o).sigmoid_()
        else:  # coupled, [ f | o | g ]: c = f ⊙ c + (1 − f) ⊙ g
            z[:, : 2 * hid].sigmoid_()
            f, o, g = z.split(hid, dim=1)
            g.tanh_()
            torch.lerp(g, c, f, out=self.tanh_c)
            c.copy_(self.tanh_c)
        torch.tanh(c, out=self.tanh_c)
        torch.mul(self.tanh_c, o, out=h)

    def _slstm(self, k: int, h: Tensor, c: Tensor) -> None:
        """The sLSTM's stabilised step (cells.SLSTM) from z = [ ĩ | f̃ | z̃ | õ ]."""
        n, m = self.memory[1][k], self.memory[2][k]
        i_t, f_t, z_t, o_t = self.z.split(self.hidden_size, dim=1)
        log_f = F.logsigmoid(f_t).add_(m)  # log f + m_{t−1}
        m_new = torch.where(n > 0, torch.maximum(log_f, i_t), i_t)  # n = 0: a fresh state
        i = i_t.sub_(m_new).exp_()  # i' = exp(ĩ − m_t)
        f = log_f.sub_(m_new).exp_()  # f' = exp(log f + m_{t−1} − m_t)
        c.mul_(f).addcmul_(i, z_t.tanh_())
        n.mul_(f).add_(i)
        m.copy_(m_new)
        torch.div(c, n, out=self.tanh_c)
        torch.mul(self.tanh_c, o_t.sigmoid_(), out=h)
