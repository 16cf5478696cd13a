"""The model one token at a time in numpy: sampling without torch, from model.safetensors.

    stepper = NumpyStepper(read_portable(path))   # the step layout of torch_engine.py, in numpy
    stepper.prime(ids)                   # one stream warmed on ids (P,), from a zero state
    logits = stepper.step(tokens)        # tokens (B,) -> logits (B, V), a buffer the next step
                                         # overwrites
    for row, text in loop.generate(stepper, tokenizer, request): ...   # generate/loop.py

It is torch_engine.Stepper in numpy, for every cell, naming none: layer 0's input projection
folded into a table (V, G·H); per layer, the input projection zx into a buffer, then the
cell's step (cells/<cell>.py), traced once (export/trace.py) and laid out on buffers allocated
once (generate/plan.py), every op written with `out=`, all of a step one flat list of calls
built once per batch size. One difference: where the step begins with zx + h @ w_h, the
engine multiplies [x | h] by [w_x; w_h] at once (plan.fold_recurrent). At batch 1 a step is a few
matrix-vector products, bound by reading the weights from memory, with nothing of torch's
per-call dispatch around them. numpy's BLAS should run on one thread for one stream (the CLI
sets OPENBLAS_NUM_THREADS before numpy loads): a matrix-vector product split across two cores
is no faster, and many times slower when another process holds the second core.

A prime is run layer by layer (the whole prime's input projection in one matrix product per
layer, then the recurrence), as the torch path runs it through the full model; the two agree
to float32 rounding, which is what makes the same seed give the same text (choose.py).
"""

from __future__ import annotations

import copy
from functools import partial

import numpy as np

from charlstm.cells import CELLS, cell_options
from charlstm.cells.base import bind, fact
from charlstm.export.trace import trace
from charlstm.formats.model_file import Portable
from charlstm.generate.numpy_attention import NumpyAttention
from charlstm.generate.numpy_ops import matmul_calls, numpy_calls
from charlstm.generate.plan import fold_recurrent, lay_out

# Fold layer 0 into a table while it holds at most this many numbers (64 MB in fp32), or no more
# than the weights it replaces: a char vocabulary always fits; a 50,000-word one at 4×200 gates
# would take 160 MB. torch_engine.py uses the same rule.
MAX_TABLE = 1 << 24

State = tuple[np.ndarray, ...]  # (h, ...) each (L, B, H), as model.layers.State


def table_fits(vocab: int, width: int, embed_numel: int, w_x_numel: int) -> bool:
    """Whether layer 0's input projection is kept as a table of V rows of G·H."""
    return vocab * width <= max(MAX_TABLE, embed_numel + w_x_numel)


class NumpyStepper:
    """Advances B streams of a model one token at a time (see the module docstring). One
    stepper must not be used from two threads at once (its buffers are shared between steps)."""

    def __init__(self, model: Portable) -> None:
        w, cfg = model.weights, model.config
        cell = CELLS[cfg.cell]
        self.names = cell.STATE  # h first
        self.gated = bool(fact(cell, "INPUT_GATED"))  # the step gets x, not zx
        self.num_layers, self.hidden_size = cfg.num_layers, cfg.hidden_size
        self.vocab_size = cfg.vocab_size
        self.layers = [{name.split(".", 1)[1]: a for name, a in w.items()  # w_x, w_h, b, ...
                        if name.startswith(f"layer{k}.")} for k in range(cfg.num_layers)]
        self.params = [bind(cell, layer) for layer in self.layers]
        self.embed, self.w_out, self.b_out = w["embed"], w["head.w"], w["head.b"]
        w_x0, b0 = self.layers[0]["w_x"], self.layers[0]["b"]
        width = w_x0.shape[1]  # G·H
        self.gates = width // cfg.hidden_size
        self.table = None
        if table_fits(cfg.vocab_size, width, self.embed.size, w_x0.size) and not self.gated:
            self.table = self.embed @ w_x0 + b0  # (V, G·H)
        # When the step starts with zx + s @ P (s the state's h, P its w_h), the engine computes
        # that sum: a table row plus one product for layer 0, [x | s] @ [w_x; P] + b above it
        # (one product, not two: two cost ~20% more in OpenBLAS at H = 512).
        plan, self.fold = fold_recurrent(trace(cell, **cell_options(cfg)))
        self.layouts = [lay_out(plan, cfg.hidden_size, layer["w_x"].shape[0])
                        for layer in self.layers]  # fmt: skip
        self.folded = self.fold is not None and not self.gated
        self.w_cat = [None] * cfg.num_layers
        if self.folded:
            self.fold_part = self.names.index(self.fold[0])
            self.w_cat = [None if k == 0 and self.table is not None
                          else np.concatenate([self.layers[k]["w_x"], p[self.fold[1]]])
                          for k, p in enumerate(self.params)]  # fmt: skip
        # The plan's input, per layer: x (B, I) for an INPUT_GATED cell, else zx (B, G·H).
        self.widths = [layer["w_x"].shape[0 if self.gated else 1] for layer in self.layers]
        self.batch = 0
        attention = {n[len("attention."):]: a for n, a in w.items() if n.startswith("attention.")}
        self.attend = NumpyAttention(attention, cfg.attention) if cfg.attention else None

    def fork(self) -> NumpyStepper:
        """A stepper over the same weights (shared, never written) with buffers of its own."""
        other = copy.copy(self)
        other.batch = 0
        other.attend = copy.copy(self.attend)  # its memory is loaded anew at the first start
        return other

    def zero_state(self, batch: int) -> State:
        past = (np.zeros((self.attend.memory, batch, self.hidden_size), np.float32),
                ) if self.attend is not None else ()  # fmt: skip
        return tuple(np.zeros((self.num_layers, batch, self.hidden_size), np.float32)
                     for _ in self.names) + past  # fmt: skip

    def start(self, state: State) -> None:
        """Take `state` (copied) as where the streams stand; its batch sets B."""
        if state[0].shape[1] != self.batch:
            self._allocate(state[0].shape[1])
        for mine, given in zip(self.memory, state[: len(self.names)], strict=True):
            for k, row in enumerate(mine):
                row[...] = given[k]
        if self.attend is not None:
            self.attend.load(state[-1])

    def state(self) -> State:
        """A copy of the current state, (L, B, H) each, then --attention's memory (M, B, H)."""
        past = (self.attend.unload(),) if self.attend is not None else ()
        return tuple(np.stack(part) for part in self.memory) + past

    # The rows of states (generate/loop.py keeps its batch with these).
    @staticmethod
    def repeat(state: State, n: int) -> State:
        return tuple(np.repeat(s, n, axis=1) for s in state)

    @staticmethod
    def cat(a: State, b: State) -> State:
        return tuple(np.concatenate([x, y], axis=1) for x, y in zip(a, b, strict=True))

    @staticmethod
    def pick(state: State, index: list[int]) -> State:
        return tuple(s[:, index] for s in state)

    def _allocate(self, batch: int) -> None:
        self.batch = batch
        new = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
        hid, layers = self.hidden_size, range(self.num_layers)
        # [x | s] of the folded product (see __init__), layer k's s kept in it as its state.
        xh = [new(batch, w.shape[0]) if w is not None else None for w in self.w_cat]
        # The state: memory[j][k] is part j of layer k, (B, H); a layer's plan writes its own.
        self.memory = [[xh[k][:, -hid:] if xh[k] is not None and self.folded
                        and j == self.fold_part else new(batch, hid) for k in layers]
                       for j in range(len(self.names))]  # fmt: skip
        self.inputs = [new(batch, width) for width in self.widths]
        self.top = new(batch, hid)  # --attention's output, which the head reads
        self.sp = new(batch, self.widths[0])  # s @ P, added to layer 0's table row
        self.programs = [numpy_calls(layout, {"input": self.inputs[k], **{
            f"state:{n}": part[k] for n, part in zip(self.names, self.memory, strict=True)}},
            self.params[k]) for k, layout in enumerate(self.layouts)]  # fmt: skip
        self.logits = new(batch, self.vocab_size)
        # Layer 0's input, filled from the tokens by `step`: x itself, a row of the table, or
        # the embedding row (in [x | s] when folded) that calls[0] projects.
        self.x0 = self.inputs[0] if self.gated or self.table is not None else (
            xh[0][:, : -hid] if xh[0] is not None else new(batch, self.embed.shape[1]))
        # Everything else a step does, as one list of calls: per layer its input, then its plan.
        calls: list = []
        h = self.memory[0]
        for k, layer in enumerate(self.layers):
            into = self.inputs[k]
            if xh[k] is not None:  # [x | s] @ [w_x; P] + b
                if k > 0:
                    calls.append(partial(np.copyto, xh[k][:, :-hid], h[k - 1]))
                calls += [*matmul_calls(xh[k], self.w_cat[k], into),
                          partial(np.add, into, layer["b"], out=into)]  # fmt: skip
            elif self.gated:  # x itself: layer 0's is filled by `step`
                if k > 0:
                    calls.append(partial(np.copyto, into, h[k - 1]))
            elif k == 0 and self.table is not None:  # the table row, filled by `step`
                if self.folded:  # + s @ P
                    calls += self._folded_sum(0)
            else:  # x @ w_x + b
                x = h[k - 1] if k > 0 else self.x0
                calls += [*matmul_calls(x, layer["w_x"], into),
                          partial(np.add, into, layer["b"], out=into)]  # fmt: skip
            calls += self.programs[k]
        top = h[-1]
        if self.attend is not None:
            calls.append(partial(self._attend, h[-1]))
            top = self.top
        calls += [*matmul_calls(top, self.w_out, self.logits),
                  partial(np.add, self.logits, self.b_out, out=self.logits)]  # fmt: skip
        self.calls = calls

    def _attend(self, h: np.ndarray) -> None:
        """--attention's block over h (B, H) into self.top, the buffer shifting by one."""
        assert self.attend is not None
        self.attend.step(h, out=self.top)

    def _folded_sum(self, k: int) -> list:
        """Calls that add s @ P to layer k's input (see __init__)."""
        s, p = self.memory[self.fold_part][k], self.params[k][self.fold[1]]
        into = self.inputs[k]
        sp = self.sp if k == 0 else np.zeros_like(into)
        return [*matmul_calls(s, p, sp), partial(np.add, into, sp, out=into)]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed tokens (B,) to the B streams; returns the next-token logits (B, V)."""
        tokens = np.asarray(tokens).reshape(-1)
        if self.batch == 0:
            self.start(self.zero_state(len(tokens)))
        if self.table is not None and not self.gated:
            np.take(self.table, tokens, axis=0, out=self.x0)
        else:
            self.x0[...] = self.embed[tokens]
        for call in self.calls:
            call()
        return self.logits

    def prime(self, ids: np.ndarray, state: State | None = None) -> np.ndarray:
        """Warm one stream on ids (P,), P ≥ 1, from `state` (L, 1, H) each (None: zeros), layer
        by layer: each layer's input projection for the whole prime in one product, then its
        recurrence. Returns the logits (1, V) after the last id; the stepper then stands at
        batch 1."""
        ids = np.asarray(ids).reshape(-1)
        self.start(self.zero_state(1) if state is None else state)
        x = self.embed[ids]  # the layer's input, (P, I)
        for k, layer in enumerate(self.layers):
            if self.gated:
                xs = x
            elif k == 0 and self.table is not None:
                xs = self.table[ids]
            else:
                xs = x @ layer["w_x"] + layer["b"]  # (P, G·H)
            into, h = self.inputs[k], self.memory[0][k]
            calls = (self._folded_sum(k) if self.folded else []) + self.programs[k]
            x = np.empty((len(ids), self.hidden_size), np.float32)
            for t in range(len(ids)):
                into[0] = xs[t]
                for call in calls:
                    call()
                x[t] = h[0]
        top = self.memory[0][-1]
        if self.attend is not None:  # the block over each position of the prime, in turn
            for t in range(len(ids)):
                self._attend(x[t : t + 1])
            top = self.top
        np.matmul(top, self.w_out, out=self.logits)
        self.logits += self.b_out
        return self.logits

