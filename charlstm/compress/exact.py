"""The integer-exact LSTM: a trained model's next-token frequencies, computed so that every
machine, thread count and engine (numpy or torch) gets the very same integers.

An entropy coder decodes only if the decoder's probabilities equal the encoder's bit for bit.
Floating point does not promise that across machines: a BLAS sums a dot product in an order
that depends on the CPU, the library and the thread count, and each order rounds differently.
Here every number the coder depends on is an integer, made so by construction:

    weights       w_q = round(w · 2^W)            a power-of-two scale, then round half to even:
                                                  exact IEEE arithmetic, the same everywhere
    embeddings    e_q = round(e · 2^A)
    hidden state  h_q = h · 2^A   (|h_q| ≤ 2^A)   made in this scale by the step below
    products      x_q @ w_q  as a float64 GEMM    exact: every column's Σ|w_q|·max|x_q| is checked
                                                  below 2^53 when quantising, so every partial sum
                                                  of every order (any BLAS, any thread count) is
                                                  an exact integer
    gates         σ, tanh by integer tables over the pre-activation, linearly interpolated
    cell          c_q = (f_q·c_q + i_q·g_q) >> P, in int64
    softmax       an integer exp table over (max logit − logit) → integer frequencies that sum
                  to exactly 2^24 − (V + 1), each symbol then getting + 1 from the coder

The tables come from Python's `decimal` (correctly rounded; no libm), and `fingerprint` hashes
the quantised weights, the tables and these constants, so a file names the exact arithmetic
that made it.

One step of layer k, gates in [ i | f | o | g ] order (torch stores i, f, g, o):

    z   = T0[token] + h_0 @ U_0              layer 0: T0 = e_q @ W_0 + b_0, a (V, 4H) table
    z   = [ h_{k-1} | h_k ] @ [W_k; U_k] + b_k    later layers: one multiply
    u   = z >> (W + A − Z)                   Z fractional bits, the tables' input scale
    i, f, o = SIGMOID[u[:, :3H]];  g = TANH[u[:, 3H:]]          each in units of 2^-P
    c   = (f·c + i·g + ½) >> P;  h = (o · TANH[c] + ½) >> P    (Z = P = A)
"""

from __future__ import annotations

import decimal
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError

# Fixed-point scales (bits after the binary point). A change here changes every compressed file:
# it is part of the fingerprint, and of compress.FORMAT_VERSION's meaning.
W_BITS = 20  # weights and biases: steps of 1e-6, far below float32 training noise
A_BITS = 15  # hidden state, embeddings, gate outputs, cell state: steps of 3e-5
Z_BITS = A_BITS  # pre-activations as the tables read them (= A_BITS, so c indexes TANH directly)
TABLE_STEP_BITS = 6  # table entries every 1/64 along the pre-activation, interpolated between
TABLE_RANGE = 16  # σ and tanh are tabulated on [-16, 16) and held constant beyond
C_LIMIT = 1 << (A_BITS + 16)  # |c| ≤ 65,536: far beyond any trained cell, and no int64 overflow
EXP_STEP_BITS = 8  # the exp table: one entry per 1/256 nat of (max logit − logit)
EXP_RANGE = 24  # nats; beyond, a token's weight is 0 (the coder still gives it 2^-24)
EXP_BITS = 30  # exp table values: 2^30 at the top
CODER_BITS = 24  # the range coder's probability precision (constriction's default)
ESCAPE_WEIGHT = 1 << 8  # the escape symbol's share of 2^24: 2^-16, 2e-5 bits on every token
_EXACT_LIMIT = 1 << 52  # float64 integers are exact below 2^53; keep a bit in hand
_WEIGHT_LIMIT = 1 << 40  # |w_q| below this keeps int64 column sums of any real layer exact


class QuantizeError(CharlstmError):
    """A model this exact path cannot run; the message is one line for the user."""


@dataclass(frozen=True)
class Tables:
    sigmoid: np.ndarray  # (2·16·64 + 1,) int64, σ(x)·2^P at x = -16 + k/64
    tanh: np.ndarray  # same grid, tanh(x)·2^P
    exp: np.ndarray  # (24·256 + 1,) int64, exp(-(k + ½)/256)·2^30, last entry 0


@functools.cache
def tables() -> Tables:
    """The lookup tables, from correctly rounded decimal arithmetic: the same on every machine
    and every Python (libm's exp may differ in its last bit between platforms)."""
    ctx = decimal.Context(prec=34, rounding=decimal.ROUND_HALF_EVEN)
    one, two = decimal.Decimal(1), decimal.Decimal(2)
    scale = decimal.Decimal(1 << A_BITS)

    def to_int(x: decimal.Decimal, s: decimal.Decimal) -> int:
        return int(ctx.multiply(x, s).to_integral_value(rounding=decimal.ROUND_HALF_EVEN))

    def sigmoid(x: decimal.Decimal) -> decimal.Decimal:
        return ctx.divide(one, ctx.add(one, ctx.exp(ctx.minus(x))))

    steps = 1 << TABLE_STEP_BITS
    grid = [
        ctx.divide(decimal.Decimal(k), steps)
        for k in range(-TABLE_RANGE * steps, TABLE_RANGE * steps + 1)
    ]
    sig = [to_int(sigmoid(x), scale) for x in grid]
    tanh = [to_int(ctx.subtract(ctx.multiply(two, sigmoid(ctx.multiply(two, x))), one), scale)
            for x in grid]  # fmt: skip
    e_steps = 1 << EXP_STEP_BITS
    top = decimal.Decimal(1 << EXP_BITS)
    exp = [to_int(ctx.exp(ctx.divide(decimal.Decimal(-2 * k - 1), 2 * e_steps)), top)
           for k in range(EXP_RANGE * e_steps)] + [0]  # fmt: skip
    return Tables(*(np.array(t, dtype=np.int64) for t in (sig, tanh, exp)))


# ----------------------------------------------------------------------------------- engines
# The step writes every result into a buffer allocated once (out=): fresh arrays of this size
# come from mmap and page-fault on first touch, which cost more than the arithmetic (measured:
# 2.2 ms against 0.3 ms per layer at 54 × 2048).


class _NumpyOps:
    """The few operations the step needs, in numpy's spelling; _TorchOps is the same in torch's.
    Every one writes into `out`."""

    name = "numpy"
    int64, float64 = np.int64, np.float64

    def array(self, a: np.ndarray) -> Any:
        return np.ascontiguousarray(a)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return np.zeros(shape, dtype=dtype)

    def numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def matmul(self, a: Any, b: Any, out: Any) -> None:
        np.matmul(a, b, out=out)

    def cast(self, src: Any, out: Any) -> None:  # integer-valued floats ↔ int64: exact
        np.copyto(out, src, casting="unsafe")

    def take(self, table: Any, idx: Any, out: Any) -> None:  # out[i, j] = table[idx[i, j]]
        np.take(table, idx, out=out, mode="clip")  # in range; "clip" avoids a buffered copy

    def rows(self, table: Any, idx: Any, out: Any) -> None:  # out[i] = table[idx[i]]
        np.take(table, idx, axis=0, out=out, mode="clip")

    def clip(self, a: Any, lo: Any, hi: Any, out: Any) -> None:
        np.clip(a, lo, hi, out=out)

    def rshift(self, a: Any, k: int, out: Any) -> None:
        np.right_shift(a, k, out=out)

    def mask(self, a: Any, m: int, out: Any) -> None:
        np.bitwise_and(a, m, out=out)

    def add(self, a: Any, b: Any, out: Any) -> None:
        np.add(a, b, out=out)

    def mul(self, a: Any, b: Any, out: Any) -> None:
        np.multiply(a, b, out=out)

    def rowmax(self, a: Any) -> Any:
        return a.max(axis=1, keepdims=True)

    def rowsum(self, a: Any) -> Any:
        return a.sum(axis=1, keepdims=True)


class _TorchOps:
    name = "torch"

    def __init__(self, device: str = "cpu") -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.int64, self.float64 = torch.int64, torch.float64

    def array(self, a: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.torch.zeros(shape, dtype=dtype, device=self.device)

    def numpy(self, a: Any) -> np.ndarray:
        return a.cpu().numpy()

    def matmul(self, a: Any, b: Any, out: Any) -> None:
        self.torch.mm(a, b, out=out)

    def cast(self, src: Any, out: Any) -> None:
        out.copy_(src)

    def take(self, table: Any, idx: Any, out: Any) -> None:
        # index_select on flat views: torch's advanced indexing is many times slower here.
        self.torch.index_select(table, 0, idx.view(-1), out=out.view(-1))

    def rows(self, table: Any, idx: Any, out: Any) -> None:
        self.torch.index_select(table, 0, idx, out=out)

    def clip(self, a: Any, lo: Any, hi: Any, out: Any) -> None:
        self.torch.clamp(a, lo, hi, out=out)

    def rshift(self, a: Any, k: int, out: Any) -> None:
        self.torch.bitwise_right_shift(a, k, out=out)

    def mask(self, a: Any, m: int, out: Any) -> None:
        self.torch.bitwise_and(a, m, out=out)

    def add(self, a: Any, b: Any, out: Any) -> None:
        self.torch.add(a, b, out=out)

    def mul(self, a: Any, b: Any, out: Any) -> None:
        self.torch.mul(a, b, out=out)

    def rowmax(self, a: Any) -> Any:
        return a.amax(dim=1, keepdim=True)

    def rowsum(self, a: Any) -> Any:
        return a.sum(dim=1, keepdim=True)


EXACT_ENGINES = ("torch", "numpy")


def _ops(engine: str, device: str = "cpu") -> _NumpyOps | _TorchOps:
    if engine == "numpy":
        if device != "cpu":
            raise QuantizeError("the numpy engine runs on the CPU only")
        return _NumpyOps()
    if engine == "torch":
        return _TorchOps(device)
    raise QuantizeError(f"unknown engine {engine!r}; choose one of {', '.join(EXACT_ENGINES)}")


# ----------------------------------------------------------------------------------- model


def _quantise(w: np.ndarray, bits: int) -> np.ndarray:
    """round(w · 2^bits) as int64: exact (a power-of-two scale), ties to even everywhere."""
    w = np.asarray(w, dtype=np.float64)
    if not np.isfinite(w).all():
        raise QuantizeError("the model has non-finite weights")
    scaled = np.ldexp(w, bits)
    if np.abs(scaled).max(initial=0) >= _WEIGHT_LIMIT:
        raise QuantizeError("the model has weights too large to quantise exactly")
    return np.rint(scaled).astype(np.int64)


def _check_exact(w_q: np.ndarray, x_max: int, what: str) -> None:
    """x @ w_q is exact in float64 when every column's Σ|w_q|·max|x| stays below 2^52: then
    every partial sum, in any order, is an integer float64 holds exactly. (Biases are added
    afterwards, in int64.) Integer arithmetic, so the check itself cannot round."""
    col = np.abs(w_q).sum(axis=0)  # (N,) int64: |w_q| < 2^40, so no overflow below 2^23 rows
    worst = int(col.max(initial=0)) * int(x_max)  # a Python int: no overflow
    if worst >= _EXACT_LIMIT:
        raise QuantizeError(f"the model's {what} are too large to compute exactly in integers")


def _gates_ifog(w: np.ndarray) -> np.ndarray:
    """torch's [i; f; g; o] row blocks → [i; f; o; g], so one table covers three gates."""
    i, f, g, o = np.split(w, 4, axis=0)
    return np.concatenate([i, f, o, g], axis=0)


class ExactLSTM:
    """A char/BPE LSTM language model in integers, giving the frequencies (B, V + 1) the coder
    uses for the next token of each of B streams, the last column being the escape.

        m = ExactLSTM.from_model(net, start_token=nl)   # quantise once
        run = m.start(batch, engine="torch")           # a batch of streams from a zero state
        freqs = run.frequencies()                      # (B, V + 1) int64 numpy
        run.advance(tokens, hold)                      # feed one token per stream

    The arrays are held twice at most (numpy, and the engine's copy).
    """

    def __init__(
        self,
        table0: np.ndarray,
        recurrent: list[np.ndarray],
        biases: list[np.ndarray],
        head: np.ndarray,
        head_bias: np.ndarray,
        start_token: int,
    ) -> None:
        self.table0 = table0  # (V, 4H): e_q @ W_0 + b_0, scale 2^(W+A)
        self.recurrent = recurrent  # [U_0 (H, 4H), [W_1; U_1] (2H, 4H), …] int64
        self.biases = biases  # [b_1, b_2, …] (4H,) each, scale 2^(W+A) (b_0 is in table0)
        self.head = head  # (H, V) int64
        self.head_bias = head_bias  # (V,) scale 2^(W+A)
        self.start_token = start_token
        self.vocab_size = int(table0.shape[0])
        self.hidden = int(head.shape[0])
        self.layers = len(recurrent)
        self.tables = tables()
        self._fingerprint: bytes | None = None
        # The step looks up σ for [ i | f | o ] and tanh for g in one table, σ's then tanh's:
        # u' = u + offset indexes it directly, so the offsets are folded into the biases (in
        # the pre-activation's scale, where they are exact multiples of the shift).
        span = TABLE_RANGE << Z_BITS  # the tabulated half-range, in units of 2^-Z
        second = len(self.tables.sigmoid) << (Z_BITS - TABLE_STEP_BITS)  # tanh's table
        hid = self.hidden
        offsets = np.full(4 * hid, span, dtype=np.int64)
        offsets[3 * hid :] += second
        self.gate_offsets = offsets << (W_BITS + A_BITS - Z_BITS)
        self.gate_bounds = (offsets - span, offsets + span - 1)  # where u' is clamped
        self.tanh_offset = span + second  # c (units of 2^-Z) → its index into tanh's table

    @classmethod
    def from_model(cls, model: Any, start_token: int) -> ExactLSTM:
        """Quantise a LanguageModel (torch's LSTM cell, full softmax); QuantizeError if it is
        another kind."""
        import torch

        cfg = model.cfg
        if cfg.cell != "lstm" or not isinstance(model.rnn, torch.nn.LSTM):
            raise QuantizeError(
                f"compress runs lstm models; this one is {cfg.cell} (not supported yet)"
            )
        rnn = model.rnn
        if rnn.proj_size or rnn.bidirectional or not rnn.bias:
            raise QuantizeError("compress runs plain LSTMs (no projection, bias on)")
        if not isinstance(model.head, torch.nn.Linear):
            raise QuantizeError("compress needs a full softmax, not an adaptive one")

        def f64(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().double().numpy()  # float32 → float64 is exact

        a_max = 1 << A_BITS
        b_bits = W_BITS + A_BITS
        embed_q = _quantise(f64(model.embed.weight), A_BITS)  # (V, E)
        recurrent, biases = [], []
        table0 = None
        for k in range(cfg.num_layers):
            w_ih = _quantise(_gates_ifog(f64(getattr(rnn, f"weight_ih_l{k}"))), W_BITS).T
            w_hh = _quantise(_gates_ifog(f64(getattr(rnn, f"weight_hh_l{k}"))), W_BITS).T
            # Two biases that only ever appear summed: quantised apart, added as integers.
            b_ih, b_hh = (_gates_ifog(f64(getattr(rnn, f"bias_{n}_l{k}"))) for n in ("ih", "hh"))
            bias = _quantise(b_ih, b_bits) + _quantise(b_hh, b_bits)
            if k == 0:
                _check_exact(w_ih, int(np.abs(embed_q).max(initial=0)), "embeddings")
                table0 = _exact_matmul(embed_q, w_ih) + bias  # (V, 4H)
                _check_exact(w_hh, a_max, "layer-0 weights")
                recurrent.append(w_hh)
            else:
                both = np.concatenate([w_ih, w_hh], axis=0)  # (2H, 4H)
                _check_exact(both, a_max, f"layer-{k} weights")
                recurrent.append(both)
                biases.append(bias)
        head = _quantise(f64(model.head.weight), W_BITS).T  # (H, V)
        head_bias = _quantise(f64(model.head.bias), b_bits)
        _check_exact(head, a_max, "output weights")
        assert table0 is not None
        return cls(table0, recurrent, biases, head, head_bias, start_token)

    def fingerprint(self) -> bytes:
        """8 bytes naming the arithmetic: the quantised weights, the tables and the constants."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            constants = [W_BITS, A_BITS, Z_BITS, TABLE_STEP_BITS, TABLE_RANGE, C_LIMIT,
                         EXP_STEP_BITS, EXP_RANGE, EXP_BITS, CODER_BITS, ESCAPE_WEIGHT,
                         self.start_token]  # fmt: skip
            h.update(json.dumps(constants).encode())
            t = self.tables
            arrays = [self.table0, *self.recurrent, *self.biases, self.head, self.head_bias,
                      t.sigmoid, t.tanh, t.exp]  # fmt: skip
            for a in arrays:
                h.update(json.dumps(a.shape).encode())
                h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
            self._fingerprint = h.digest()[:8]
        return self._fingerprint

    def start(self, batch: int, engine: str = "torch", device: str = "cpu") -> ExactRun:
        return ExactRun(self, batch, _ops(engine, device))


def _exact_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w for integer matrices whose sums were checked below 2^52: exact in float64."""
    return (x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)


class ExactRun:
    """B streams of one ExactLSTM stepping together on one engine, its state in place there.

    Buffers, after FusedLSTM (sample.py): layer k ≥ 1 multiplies xh[k] = [ h_{k-1} | h_k ] by
    [W_k; U_k] at once, so each layer's new h is written straight into its own half and into
    the next layer's input half. h lives in float64 (its values are integers, exact), c in int64.
    """

    def __init__(self, model: ExactLSTM, batch: int, ops: _NumpyOps | _TorchOps) -> None:
        self.m, self.ops, self.batch = model, ops, batch
        hid, i64, f64 = model.hidden, ops.int64, ops.float64
        self._table0 = ops.array(model.table0 + model.gate_offsets)
        self._w = [ops.array(w.astype(np.float64)) for w in model.recurrent]
        self._b = [None] + [ops.array(b + model.gate_offsets) for b in model.biases]
        self._head = ops.array(model.head.astype(np.float64))
        self._head_bias = ops.array(model.head_bias)
        t = model.tables
        self._gate_values = ops.array(np.concatenate([t.sigmoid, t.tanh]))
        self._gate_slopes = ops.array(np.concatenate([_slopes(t.sigmoid), _slopes(t.tanh)]))
        self._exp = ops.array(t.exp)
        lo, hi = model.gate_bounds
        self._lo, self._hi = ops.array(lo), ops.array(hi)
        # State: layer 0's own h, then [ input | own h ] of every later layer, then the top h.
        self.h0 = ops.empty((batch, hid), f64)
        self.xh = [None] + [ops.empty((batch, 2 * hid), f64) for _ in range(1, model.layers)]
        self.top = ops.empty((batch, hid), f64)
        self.c = [ops.empty((batch, hid), i64) for _ in range(model.layers)]
        # Scratch.
        self._zf = ops.empty((batch, 4 * hid), f64)
        self._z, self._idx, self._val, self._tmp = (ops.empty((batch, 4 * hid), i64)
                                                    for _ in range(4))  # fmt: skip
        self._hz, self._hidx, self._hval, self._htmp = (ops.empty((batch, hid), i64)
                                                        for _ in range(4))  # fmt: skip
        self._logits_f = ops.empty((batch, model.vocab_size), f64)
        self._logits = ops.empty((batch, model.vocab_size), i64)
        self._weights = ops.empty((batch, model.vocab_size), i64)
        self._freqs = np.zeros((batch, model.vocab_size + 1), dtype=np.int64)
        self.advance(np.full(batch, model.start_token, dtype=np.int64))

    def _own(self, k: int) -> Any:
        """Layer k's own h, the part of the state the next step multiplies by U_k."""
        return self.h0 if k == 0 else self.xh[k][:, self.m.hidden :]

    def _lookup(self, u: Any, idx: Any, val: Any, tmp: Any) -> None:
        """val = table(u), u already offset and clamped into the tables' index space (in
        units of 2^-Z): the entry at or below u plus the slope times the remainder. u is
        overwritten."""
        ops, shift = self.ops, Z_BITS - TABLE_STEP_BITS
        ops.rshift(u, shift, idx)
        ops.mask(u, (1 << shift) - 1, u)
        ops.take(self._gate_values, idx, val)
        ops.take(self._gate_slopes, idx, tmp)
        ops.mul(tmp, u, tmp)
        ops.rshift(tmp, shift, tmp)
        ops.add(val, tmp, val)

    def advance(self, tokens: np.ndarray, hold: np.ndarray | None = None) -> None:
        """Feed tokens (B,) int; streams where `hold` (B,) is true keep their state and their
        frequencies, as if nothing had been fed (a token the model could not see)."""
        ops, m = self.ops, self.m
        hid, half = m.hidden, 1 << (A_BITS - 1)
        held = np.flatnonzero(hold) if hold is not None else np.zeros(0, dtype=np.int64)
        if len(held):
            rows = ops.array(held)
            saved = [(self._own(k)[rows], self.c[k][rows]) for k in range(m.layers)]  # copies
            saved_freqs = self._freqs[held].copy()
        z, idx, val, tmp = self._z, self._idx, self._val, self._tmp
        for k in range(m.layers):
            # z = the pre-activations (B, 4H) in units of 2^-(W+A), offsets folded in.
            if k == 0:
                ops.matmul(self.h0, self._w[0], self._zf)
                ops.cast(self._zf, z)
                ops.rows(self._table0, ops.array(np.asarray(tokens, dtype=np.int64)), tmp)
                ops.add(z, tmp, z)
            else:
                ops.matmul(self.xh[k], self._w[k], self._zf)
                ops.cast(self._zf, z)
                ops.add(z, self._b[k], z)
            ops.rshift(z, W_BITS + A_BITS - Z_BITS, z)
            ops.clip(z, self._lo, self._hi, z)
            self._lookup(z, idx, val, tmp)  # val = [ i | f | o | g ], units of 2^-P
            i, f, o, g = (val[:, j * hid : (j + 1) * hid] for j in range(4))
            c, hz, hidx, hval, htmp = self.c[k], self._hz, self._hidx, self._hval, self._htmp
            ops.mul(c, f, c)  # c = (f·c + i·g + ½) >> P
            ops.mul(i, g, htmp)
            ops.add(c, htmp, c)
            ops.add(c, half, c)
            ops.rshift(c, A_BITS, c)
            ops.clip(c, -C_LIMIT, C_LIMIT, c)
            ops.add(c, m.tanh_offset, hz)  # h = (o · tanh(c) + ½) >> P
            ops.clip(hz, m.tanh_offset - (TABLE_RANGE << Z_BITS),
                     m.tanh_offset + (TABLE_RANGE << Z_BITS) - 1, hz)  # fmt: skip
            self._lookup(hz, hidx, hval, htmp)
            ops.mul(o, hval, hz)
            ops.add(hz, half, hz)
            ops.rshift(hz, A_BITS, hz)
            ops.cast(hz, self._own(k))
            ops.cast(hz, self.xh[k + 1][:, :hid] if k + 1 < m.layers else self.top)
        ops.matmul(self.top, self._head, self._logits_f)
        ops.cast(self._logits_f, self._logits)
        ops.add(self._logits, self._head_bias, self._logits)
        self._freqs = self._frequencies(self._logits)
        if len(held):
            for k, (h_old, c_old) in enumerate(saved):
                self._own(k)[rows] = h_old
                self.c[k][rows] = c_old
            self._freqs[held] = saved_freqs

    def _frequencies(self, logits: Any) -> np.ndarray:
        """Integer softmax: weights exp(-(max − logit)) from the table, scaled so that they and
        the escape sum to 2^24 − (V + 1). Returns (B, V + 1) int64 numpy."""
        ops = self.ops
        drop = (ops.rowmax(logits) - logits) >> (W_BITS + A_BITS - EXP_STEP_BITS)
        ops.clip(drop, 0, len(self.m.tables.exp) - 1, drop)  # past the table's end: weight 0
        weights = self._weights
        ops.take(self._exp, drop, weights)  # (B, V), each ≤ 2^30
        room = (1 << CODER_BITS) - (self.m.vocab_size + 1) - ESCAPE_WEIGHT
        freqs = ops.numpy((weights * room) // ops.rowsum(weights))  # < 2^54: no overflow
        # Flooring leaves < V over; the escape takes it (no argmax, so no tie-breaking rule).
        escape = (1 << CODER_BITS) - (self.m.vocab_size + 1) - freqs.sum(axis=1, keepdims=True)
        return np.concatenate([freqs, escape], axis=1)

    def frequencies(self) -> np.ndarray:
        """(B, V + 1) int64: the next token's frequencies of each stream, escape last."""
        return self._freqs


def _slopes(table: np.ndarray) -> np.ndarray:
    """table[k + 1] − table[k], 0 at the end (never read: indices stop one short of it)."""
    return np.append(np.diff(table), 0)
