"""The model one token at a time in numpy: sampling without torch, from model.safetensors.

    stepper = NumpyStepper(read_portable(path))   # the step layout of step.py, in numpy
    stepper.prime(ids)                   # one stream warmed on ids (P,), from a zero state
    logits = stepper.step(tokens)        # tokens (B,) -> logits (B, V), a buffer the next step
                                         # overwrites
    for ids in generate(model, prime_ids, cfg, rng): ...   # as sample.generate, same draws

It is step.Stepper line for line: layer 0's input projection folded into a table (V, G·H);
every later layer keeps [input | own h] side by side and multiplies it by [w_x; w_h] once; the
gate blocks in step.py's order; every buffer allocated once and written with `out=`. At batch 1
a step is a few matrix-vector products, bound by reading the weights from memory, with nothing
of torch's per-call dispatch around them. numpy's BLAS should run on one thread for one stream
(the CLI sets OPENBLAS_NUM_THREADS before numpy loads): a matrix-vector product split across
two cores is no faster, and many times slower when another process holds the second core.

A prime is run layer by layer (the whole prime's input projection in one matrix product per
layer, then the recurrence), as the torch path runs it through the full model; the two agree
to float32 rounding, which is what makes the same seed give the same text (choice.py).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np

from charlstm.config import SampleConfig
from charlstm.formats.model_file import Portable
from charlstm.generate.choose import Utf8Rows, choose

# Fold layer 0 into a table while it holds at most this many numbers (64 MB in fp32), or no more
# than the weights it replaces: a char vocabulary always fits; a 50,000-word one at 4×200 gates
# would take 160 MB. step.py uses the same rule.
MAX_TABLE = 1 << 24
CELLS_WITH_MEMORY = ("lstm", "peephole", "coupled")

State = tuple[np.ndarray, ...]  # (h,) or (h, c), each (L, B, H), as cells.State


def table_fits(vocab: int, width: int, embed_numel: int, w_x_numel: int) -> bool:
    """Whether layer 0's input projection is kept as a table of V rows of G·H."""
    return vocab * width <= max(MAX_TABLE, embed_numel + w_x_numel)


def _sigmoid_(x: np.ndarray) -> None:
    """σ(x) = (1 + tanh(x/2)) / 2, in place: four passes, no overflow for any x."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5


class NumpyStepper:
    """Advances B streams of a model one token at a time (see the module docstring). One
    stepper must not be used from two threads at once (its buffers are shared between steps)."""

    def __init__(self, model: Portable) -> None:
        w, cfg = model.weights, model.config
        self.cell = cfg.cell
        self.has_memory = cfg.cell in CELLS_WITH_MEMORY
        self.num_layers, self.hidden_size = cfg.num_layers, cfg.hidden_size
        self.vocab_size = cfg.vocab_size
        L = range(cfg.num_layers)  # noqa: N806
        self.w_x = [w[f"layer{k}.w_x"] for k in L]
        self.w_h = [w[f"layer{k}.w_h"] for k in L]
        self.b = [w[f"layer{k}.b"] for k in L]
        self.b_h = [w[f"layer{k}.b_h"] for k in L] if cfg.cell == "gru" else None
        self.p = [w[f"layer{k}.p"] for k in L] if cfg.cell == "peephole" else None
        self.embed, self.w_out, self.b_out = w["embed"], w["head.w"], w["head.b"]
        width = self.w_x[0].shape[1]  # G·H
        self.gates = width // cfg.hidden_size
        self.table = None
        if table_fits(cfg.vocab_size, width, self.embed.size, self.w_x[0].size):
            self.table = self.embed @ self.w_x[0] + self.b[0]  # (V, G·H)
        # [w_x; w_h] for one multiply per layer after the first (not gru: r scales w_h's part).
        self.w_cat = [
            None if k == 0 or cfg.cell == "gru" else np.concatenate([self.w_x[k], self.w_h[k]])
            for k in L
        ]
        self.batch = 0

    def fork(self) -> NumpyStepper:
        """A stepper over the same weights (shared, never written) with buffers of its own."""
        other = copy.copy(self)
        other.batch = 0
        return other

    def zero_state(self, batch: int) -> State:
        h = np.zeros((self.num_layers, batch, self.hidden_size), np.float32)
        return (h, np.zeros_like(h)) if self.has_memory else (h,)

    def start(self, state: State) -> None:
        """Take `state` (copied) as where the streams stand; its batch sets B."""
        batch, hid = state[0].shape[1], self.hidden_size
        if batch != self.batch:
            self._allocate(batch)
        h = state[0]
        for k in range(self.num_layers):
            self.own[k][...] = h[k]
            if k > 0 and self.cell != "gru":
                self.xh[k][:, :hid] = h[k - 1]
        if self.has_memory:
            self.c[...] = state[1]

    def state(self) -> State:
        """A copy of the current state, (L, B, H) each."""
        h = np.stack(self.own)
        return (h, self.c.copy()) if self.has_memory else (h,)

    def _allocate(self, batch: int) -> None:
        hid, width = self.hidden_size, self.gates * self.hidden_size
        new = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
        self.batch = batch
        self.z = new(batch, width)  # gate pre-activations of the layer at hand
        self.zh = new(batch, width)  # h · w_h (gru's hidden projection; layer 0's for the rest)
        if self.cell == "gru":
            self.xh = [None] * self.num_layers
            self.own = [new(batch, hid) for _ in range(self.num_layers)]
        else:
            # xh[k] = [ layer k-1's new h | layer k's own h ], the input of one multiply.
            self.xh = [None] + [new(batch, 2 * hid) for _ in range(1, self.num_layers)]
            self.own = [new(batch, hid)] + [xh[:, hid:] for xh in self.xh[1:]]
        self.c = new(self.num_layers, batch, hid) if self.has_memory else None
        self.tmp = new(batch, hid)
        self.logits = new(batch, self.vocab_size)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed tokens (B,) to the B streams; returns the next-token logits (B, V)."""
        tokens = np.asarray(tokens).reshape(-1)
        if self.batch == 0:
            self.start(self.zero_state(len(tokens)))
        z, hid = self.z, self.hidden_size
        for k in range(self.num_layers):
            h = self.own[k]
            if k == 0:  # the input projection: a row of the table, or embed · w_x + b
                if self.table is not None:
                    np.take(self.table, tokens, axis=0, out=z)
                else:
                    np.matmul(self.embed[tokens], self.w_x[0], out=z)
                    z += self.b[0]
                if self.cell != "gru":
                    np.matmul(h, self.w_h[0], out=self.zh)
                    z += self.zh
            elif self.cell == "gru":
                np.matmul(self.own[k - 1], self.w_x[k], out=z)
                z += self.b[k]
            else:
                np.matmul(self.xh[k], self.w_cat[k], out=z)
                z += self.b[k]
            self._cell(k, h)
            if k + 1 < self.num_layers and self.cell != "gru":
                self.xh[k + 1][:, :hid] = h  # the next layer's input
        np.matmul(self.own[-1], self.w_out, out=self.logits)
        self.logits += self.b_out
        return self.logits

    def prime(self, ids: np.ndarray) -> np.ndarray:
        """Warm one stream on ids (P,), P ≥ 1, from a zero state, layer by layer: each layer's
        input projection for the whole prime in one product, then its recurrence. Returns the
        logits (1, V) after the last id; the stepper then stands at batch 1."""
        ids = np.asarray(ids).reshape(-1)
        self.start(self.zero_state(1))
        z, hid, cell = self.z, self.hidden_size, self.cell
        x = None  # the layer below's outputs (P, H)
        for k in range(self.num_layers):
            if k == 0:
                if self.table is not None:
                    zx = self.table[ids]
                else:
                    zx = self.embed[ids] @ self.w_x[0] + self.b[0]
            else:
                zx = x @ self.w_x[k] + self.b[k]  # (P, G·H)
            h = self.own[k]
            out = np.empty((len(ids), hid), np.float32)
            for t in range(len(ids)):
                if cell == "gru":
                    z[0] = zx[t]
                else:
                    np.matmul(h, self.w_h[k], out=self.zh)
                    np.add(self.zh, zx[t], out=z)
                self._cell(k, h)
                out[t] = h[0]
            if k + 1 < self.num_layers and cell != "gru":
                self.xh[k + 1][:, :hid] = h
            x = out
        np.matmul(self.own[-1], self.w_out, out=self.logits)
        self.logits += self.b_out
        return self.logits

    def _cell(self, k: int, h: np.ndarray) -> None:
        """Gate pre-activations in self.z -> layer k's new state, written into h (and c)."""
        z, hid, tmp = self.z, self.hidden_size, self.tmp
        if self.cell == "rnn":
            np.tanh(z, out=h)
            return
        if self.cell == "gru":  # torch's GRU, [ r | z | n ]: h = (1 − z') ⊙ n + z' ⊙ h
            zh = self.zh
            np.matmul(h, self.w_h[k], out=zh)
            zh += self.b_h[k]
            rz, n = z[:, : 2 * hid], z[:, 2 * hid :]
            rz += zh[:, : 2 * hid]
            _sigmoid_(rz)
            np.multiply(z[:, :hid], zh[:, 2 * hid :], out=tmp)
            n += tmp
            np.tanh(n, out=n)
            np.subtract(h, n, out=tmp)  # n + z' ⊙ (h − n)
            tmp *= z[:, hid : 2 * hid]
            np.add(n, tmp, out=h)
            return
        c = self.c[k]
        if self.cell == "lstm":  # [ i | f | o | g ]
            _sigmoid_(z[:, : 3 * hid])
            i, f, o, g = (z[:, j * hid : (j + 1) * hid] for j in range(4))
            np.tanh(g, out=g)
            c *= f
            np.multiply(i, g, out=tmp)
            c += tmp
        elif self.cell == "peephole":  # [ i | f | g | o ]; o sees the new cell
            i, f, g, o = (z[:, j * hid : (j + 1) * hid] for j in range(4))
            p_i, p_f, p_o = self.p[k]
            np.multiply(c, p_i, out=tmp)
            i += tmp
            np.multiply(c, p_f, out=tmp)
            f += tmp
            _sigmoid_(z[:, : 2 * hid])
            np.tanh(g, out=g)
            c *= f
            np.multiply(i, g, out=tmp)
            c += tmp
            np.multiply(c, p_o, out=tmp)
            o += tmp
            _sigmoid_(o)
        else:  # coupled, [ f | o | g ]: c = f ⊙ c + (1 − f) ⊙ g = g + f ⊙ (c − g)
            _sigmoid_(z[:, : 2 * hid])
            f, o, g = (z[:, j * hid : (j + 1) * hid] for j in range(3))
            np.tanh(g, out=g)
            c -= g
            c *= f
            c += g
        np.tanh(c, out=tmp)
        np.multiply(tmp, o, out=h)


def generate(
    model: Portable | NumpyStepper,
    prime_ids: np.ndarray,
    cfg: SampleConfig,
    rng: np.random.Generator,
    batch: int = 1,
    utf8: Utf8Rows | None = None,
) -> Iterator[np.ndarray]:
    """Yield the ids (batch,) of each new token as soon as it is chosen, exactly as
    sample.generate does: the prime's last prediction is the first choice, then one step and
    one choice (choice.choose, one draw per row from `rng`, within `utf8`'s tokens) per token."""
    stepper = model if isinstance(model, NumpyStepper) else NumpyStepper(model)
    last = stepper.prime(prime_ids)  # (1, V)
    if batch > 1:  # the rows share the prime: warm one, then copy its state
        stepper.start(tuple(np.repeat(s, batch, axis=1) for s in stepper.state()))
        last = np.repeat(last, batch, axis=0)
    for _ in range(cfg.length):
        token = choose(last, cfg, rng.random(batch), None if utf8 is None else utf8.allowed())
        if utf8 is not None:
            utf8.push(token)
        yield token
        last = stepper.step(token)
