"""The model one token at a time: the fast path that sampling runs on, for every cell.

    stepper = Stepper(model)          # copies the weights into the step layout (below)
    stepper.start(state)              # a State, (h, ...) of (L, B, H) each, e.g. after a prime
    logits = stepper.step(tokens)     # tokens (B,) -> logits (B, V), a view of a buffer that
                                      # the next step overwrites
    state = stepper.state()           # a copy of where the B streams stand

Calling nn.LSTM on a (B, 1, I) window costs milliseconds at 2×512 on a CPU, nearly all of it
oneDNN setting up a sequence kernel for a single step. A step here is, per layer, the input
projection zx (a row of a table, or one matrix multiply) into a preallocated buffer, then the
cell's own step (cells/<cell>.py) traced once into a list of operations (export/trace.py) and
laid out on preallocated buffers (generate/plan.py): one addmm for the recurrent product and a
handful of in-place elementwise kernels, under inference_mode. This file names no cell. At
batch 1 the time goes to streaming the weights from memory (16 MB per step at 2×512 in fp32).

The step layout (model/weights.StepWeights, cells/base.py): embed (V, E); per layer k,
w_x (I, G·H), w_h (H, G·H) and b (G·H,) in the cell's BLOCKS order (chosen so the sigmoid
gates sit side by side and take one kernel: lstm [i f o g], coupled [f o g]), plus what else
the cell declares (b_h, p, q, r); the head w_out (H, V), b_out (V,).

Layer 0's input projection is folded into a table (embed · w_x + b, V × G·H) when that is not
much bigger than the weights it replaces, so its step reads a row (not for an INPUT_GATED cell,
the Mogrifier: its input is gated by h before the projection, so the step gets x itself).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from charlstm.cells import CELLS
from charlstm.cells.base import bind, fact
from charlstm.export.trace import trace
from charlstm.generate.numpy_engine import (
    table_fits,  # when layer 0 becomes a table: one rule for both engines
)
from charlstm.generate.plan import Layout, lay_out, viewer
from charlstm.model.attention import Attention
from charlstm.model.language_model import LanguageModel
from charlstm.model.layers import State
from charlstm.model.weights import StepWeights, step_weights

# The fused kernels torch has for the plan's add(x, a @ w) and add(x, a * b).
FUSE = frozenset({"addmm", "addcmul"})


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
        cell = CELLS[w.cell]
        self.parts = len(cell.STATE)  # h, then c (and n, m for slstm)
        self.gated = bool(fact(cell, "INPUT_GATED"))  # the step gets x, not zx
        plan = trace(cell, **w.options)
        hid, layer0 = w.hidden_size, w.layers[0]
        self.params = [bind(cell, layer) for layer in w.layers]
        self.layouts = [lay_out(plan, hid, layer["w_x"].shape[0], FUSE) for layer in w.layers]
        # The plan's input, per layer: x (B, I) for an INPUT_GATED cell, else zx (B, G·H).
        self.widths = [layer["w_x"].shape[0 if self.gated else 1] for layer in w.layers]
        with torch.no_grad():
            self.table = None
            width = layer0["w_x"].shape[1]  # G·H
            fits = table_fits(w.vocab_size, width, w.embed.numel(), layer0["w_x"].numel())
            if fits and not self.gated:
                self.table = torch.addmm(layer0["b"], w.embed, layer0["w_x"])  # (V, G·H)
        self.batch = 0
        self.attend = attention_block(w)

    @property
    def num_layers(self) -> int:
        return self.w.num_layers

    @property
    def hidden_size(self) -> int:
        return self.w.hidden_size

    def zero_state(self, batch: int) -> State:
        h = self.w.embed.new_zeros(self.num_layers, batch, self.hidden_size)
        past = () if self.attend is None else (h.new_zeros(self.w.memory, batch, h.shape[2]),)
        return (h, *(torch.zeros_like(h) for _ in range(self.parts - 1)), *past)

    @torch.inference_mode()
    def start(self, state: State) -> None:
        """Take `state` (copied) as where the streams stand; its batch sets B."""
        if state[0].shape[1] != self.batch:
            self._allocate(state[0].shape[1])
        for mine, given in zip(self.memory + self.past, state, strict=True):
            mine.copy_(given)

    def state(self) -> State:
        """A copy of the current state, (L, B, H) each, then --attention's memory (M, B, H)."""
        return tuple(part.clone() for part in self.memory + self.past)

    def _allocate(self, batch: int) -> None:
        w, hid = self.w, self.hidden_size
        new = w.embed.new_zeros
        self.batch = batch
        # The state, h first, every layer's: (L, B, H) each; a layer's plan writes its row.
        self.memory = [new(self.num_layers, batch, hid) for _ in range(self.parts)]
        # --attention's rolling buffer of the top layer's last M outputs, oldest first.
        self.past = [] if self.attend is None else [new(w.memory, batch, hid)]
        self.inputs = [new(batch, width) for width in self.widths]
        names = CELLS[w.cell].STATE
        self.programs = [
            torch_program(layout, {"input": self.inputs[k], **{
                f"state:{n}": part[k] for n, part in zip(names, self.memory, strict=True)}},
                self.params[k])
            for k, layout in enumerate(self.layouts)
        ]  # fmt: skip
        self.logits = new(batch, w.vocab_size) if w.w_out is not None else None

    @torch.inference_mode()
    def step(self, tokens: Tensor) -> Tensor:
        """Feed tokens (B,) to the B streams; returns the next-token logits (B, V)."""
        if self.batch == 0:
            self.start(self.zero_state(tokens.shape[0]))
        w, h = self.w, self.memory[0]
        for k, layer in enumerate(w.layers):
            into = self.inputs[k]
            if k == 0 and self.gated:
                torch.index_select(w.embed, 0, tokens, out=into)
            elif k == 0 and self.table is not None:  # a row of the table
                torch.index_select(self.table, 0, tokens, out=into)
            elif k == 0:
                torch.addmm(layer["b"], w.embed[tokens], layer["w_x"], out=into)
            elif self.gated:
                into.copy_(h[k - 1])
            else:  # the layer below's new h, projected
                torch.addmm(layer["b"], h[k - 1], layer["w_x"], out=into)
            self.programs[k]()
        top = h[-1]
        if self.attend is not None:  # the block over a window of one: what training computes
            y, past, _ = self.attend(top[:, None], self.past[0])
            self.past[0].copy_(past)  # the buffer shifts by one: O(M·H), however long the text
            top = y[:, 0]
        if self._head is not None:
            return self._head(top)
        return torch.addmm(w.b_out, top, w.w_out, out=self.logits)


def attention_block(w: StepWeights) -> Attention | None:
    """--attention's block (model/attention.py) with the weights of `w`, in eval mode."""
    if w.attention is None:
        return None
    block = Attention(w.hidden_size, w.memory).to(w.embed.device, w.embed.dtype)
    block.load_state_dict(w.attention)
    return block.eval()


class TorchStepper:
    """A Stepper (generate/loop.py) over torch's model: numpy in and out. The prime runs
    through the model's window forward (one pass over the whole prime), every step through
    Stepper above. Built from the model as it is now (see Stepper)."""

    def __init__(self, net: LanguageModel) -> None:
        self.net = net.eval()
        self.steps = Stepper(net)
        self.device = next(net.parameters()).device
        self.vocab_size = net.cfg.vocab_size

    def zero_state(self, batch: int) -> State:
        return self.steps.zero_state(batch)

    def start(self, state: State) -> None:
        self.steps.start(state)

    def state(self) -> State:
        return self.steps.state()

    @torch.inference_mode()
    def prime(self, ids: np.ndarray, state: State | None = None) -> np.ndarray:
        x = torch.from_numpy(np.asarray(ids, dtype=np.int64)).view(1, -1).to(self.device)
        logits, state = self.net(x, state)  # (1, P, V)
        self.steps.start(state)
        return logits[:, -1].float().cpu().numpy()

    def step(self, tokens: np.ndarray) -> np.ndarray:
        # On a CPU, a view of the stepper's buffer: read before the next step writes it.
        return self.steps.step(torch.from_numpy(tokens).to(self.device)).float().cpu().numpy()

    @staticmethod
    def repeat(state: State, n: int) -> State:
        return tuple(s.expand(-1, n, -1) for s in state)

    @staticmethod
    def cat(a: State, b: State) -> State:
        return tuple(torch.cat([x, y], dim=1) for x, y in zip(a, b, strict=True))

    @staticmethod
    def pick(state: State, index: list[int]) -> State:
        return tuple(s[:, torch.tensor(index, device=s.device)] for s in state)


def torch_program(
    layout: Layout, buffers: dict[str, Tensor], params: dict[str, Tensor]
) -> Callable[[], None]:
    """One step of `layout` (generate/plan.py) as a function of no arguments: it reads and
    writes `buffers` ("input", "state:<part>" (B, H) each; the temporaries are added here) in
    place. `params` are the cell's bound parameters (cells.base.bind)."""
    like = buffers["input"]
    for name, (width, dtype) in layout.temps.items():
        kind = torch.bool if dtype == "b" else like.dtype
        buffers[name] = like.new_zeros(like.shape[0], width, dtype=kind)

    view = viewer(buffers, params)
    calls: list[Callable[[], Any]] = []
    for step in layout.steps:
        calls += _calls(step.kind, view(step.out), [view(a) for a in step.args], like)
    for slot, part in layout.copies:
        calls.append(partial(buffers[f"state:{part}"].copy_, view(slot)))

    def run() -> None:
        for call in calls:
            call()

    return run


_SAME = {"add": torch.add, "mul": torch.mul, "sub": torch.sub, "div": torch.div,
         "maximum": torch.maximum, "gt": torch.gt, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
         "exp": torch.exp, "matmul": torch.mm, "addmm": torch.addmm, "addcmul": torch.addcmul,
         "where": torch.where, "log_sigmoid": torch._C._nn.log_sigmoid}  # fmt: skip


def _calls(kind: str, out: Tensor, args: list[Any], like: Tensor) -> list[Callable[[], Any]]:
    """The torch calls that compute one step into `out` (which may be one of `args`)."""
    if kind in ("add", "mul", "maximum") and not isinstance(args[0], Tensor):
        args = args[::-1]  # commutative: the tensor first
    a = args[0]
    if not isinstance(a, Tensor):  # c − b, c / b, c > b
        b, c = args[1], a
        if kind == "sub":
            return [partial(torch.sub, b, c, out=out), out.neg_]
        if kind == "div":
            return [partial(torch.reciprocal, b, out=out), partial(out.mul_, c)]
        if kind == "gt":
            return [partial(torch.lt, b, c, out=out)]
    if kind == "maximum" and not isinstance(args[1], Tensor):
        return [partial(torch.clamp, a, min=args[1], out=out)]
    if kind == "where":  # torch.where(out=) takes tensors only
        args = [x if isinstance(x, Tensor) else like.new_tensor(x) for x in args]
    return [partial(_SAME[kind], *args, out=out)]
