"""The integer-exact arithmetic: fixed-point values, the tables, and a cell's traced plan
(export/trace.py) interpreted over them, so that every machine, thread count and engine (numpy
or torch) gets the very same integers (compress/exact.py builds the model on it).

An entropy coder decodes only if the decoder's probabilities equal the encoder's bit for bit.
Floating point does not promise that across machines: a BLAS sums a dot product in an order
that depends on the CPU, the library and the thread count, and each order rounds differently.
Here every number is an integer, made so by construction; a Fixed is int64 · 2^-bits:

    weights       w_q = round(w · 2^W), biases at W + A    a power-of-two scale, then round half
                                                           to even: exact, the same everywhere
    embeddings    e_q = round(e · 2^A); the state at A bits, clipped to ±C_LIMIT when stored
    matmul        x_q @ w_q as a float64 GEMM, x clipped to ±x_limit (what the cell can reach:
                  |h| ≤ 1, the Mogrifier's x ≤ 2^rounds·max|e|): every column's Σ|w_q|·x_limit
                  is checked below 2^52 when quantising, so every partial sum of every order
                  (any BLAS, any thread count) is an exact integer
    add, sub, maximum, gt, where    exact, after aligning the scales (a left shift)
    mul           exact, the product "wide" (2A bits): rounded half up to A lazily, when a
                  table, a matmul, a product, a division or the state store reads it
    σ, tanh, log σ, exp    integer tables, linearly interpolated, read at Z bits (a pre-activation
                  floored, a wide value rounded half up); exp only on arguments ≤ 0 (the sLSTM's
                  stabilised gates; above 0 it reads exp(0))
    div           ((a << A) + b/2) // b with b ≥ 1 ulp (the sLSTM's n ≥ 1)

So the LSTM computes, bit for bit as the hand-written step before it (its files keep decoding):

    z   = T0[token] + h_0 @ U_0   (layer 0: T0 = e_q @ W_0 + b_0, a (V, 4H) table), or
    z   = h_{k-1} @ W_k + b_k + h_k @ U_k       i, f, o = σ[z >> (W + A − Z)], g = tanh[…]
    c   = (f·c + i·g + ½) >> P;  h = (o · tanh[c] + ½) >> P    (Z = P = A)

The tables come from Python's `decimal` (correctly rounded; no libm).
"""

from __future__ import annotations

import decimal
import functools
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
MUL_BITS = W_BITS + A_BITS  # a product finer than this rounds its finer factor first
EXP_ARG_RANGE = 24  # the cells' exp table: x in [-24, 0] (beyond: exp(-24)·2^P rounds to 0)


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


@dataclass(frozen=True)
class CellTables:
    log_sigmoid: np.ndarray  # on σ's grid, log σ(x)·2^P (below -16: x itself, computed)
    exp: np.ndarray  # (24·64 + 1,) exp(x)·2^P at x = -24 + k/64; the last is exp(0) = 2^P


@functools.cache
def cell_tables() -> CellTables:
    """The sLSTM's extra tables, correctly rounded like `tables` (kept apart: those are pinned
    by every LSTM file)."""
    ctx = decimal.Context(prec=34, rounding=decimal.ROUND_HALF_EVEN)
    one, scale = decimal.Decimal(1), decimal.Decimal(1 << A_BITS)

    def to_int(x: decimal.Decimal) -> int:
        return int(ctx.multiply(x, scale).to_integral_value(rounding=decimal.ROUND_HALF_EVEN))

    steps = 1 << TABLE_STEP_BITS
    grid = [ctx.divide(decimal.Decimal(k), steps)
            for k in range(-TABLE_RANGE * steps, TABLE_RANGE * steps + 1)]  # fmt: skip
    log_sig = [to_int(ctx.minus(ctx.ln(ctx.add(one, ctx.exp(ctx.minus(x)))))) for x in grid]
    exp = [to_int(ctx.exp(ctx.divide(decimal.Decimal(k), steps)))
           for k in range(-EXP_ARG_RANGE * steps, 1)]  # fmt: skip
    return CellTables(*(np.array(t, dtype=np.int64) for t in (log_sig, exp)))


# ----------------------------------------------------------------------------------- engines
# The few array operations the interpreter needs beyond Python's operators (+ - * >> & > on
# int64 arrays, which numpy and torch spell alike): every one exact on integers.


class NumpyOps:
    name = "numpy"

    def array(self, a: np.ndarray) -> Any:
        return np.ascontiguousarray(a)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return np.zeros(shape, dtype=np.int64)

    def numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def gemm(self, x: Any, w: Any) -> Any:  # int64 (B, K) @ integer-valued float64 (K, N)
        return (x.astype(np.float64) @ w).astype(np.int64)

    def take(self, table: Any, idx: Any) -> Any:
        return np.take(table, idx)

    def clip(self, a: Any, lo: Any, hi: Any) -> Any:
        return np.clip(a, lo, hi)

    def where(self, mask: Any, a: Any, b: Any) -> Any:
        return np.where(mask, a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return np.maximum(a, b)

    def floordiv(self, a: Any, b: Any) -> Any:
        return np.floor_divide(a, b)

    def rowmax(self, a: Any) -> Any:
        return a.max(axis=1, keepdims=True)

    def rowsum(self, a: Any) -> Any:
        return a.sum(axis=1, keepdims=True)


class TorchOps:
    name = "torch"

    def __init__(self, device: str = "cpu") -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def array(self, a: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.torch.zeros(shape, dtype=self.torch.int64, device=self.device)

    def numpy(self, a: Any) -> np.ndarray:
        return a.cpu().numpy()

    def gemm(self, x: Any, w: Any) -> Any:
        return self.torch.mm(x.to(self.torch.float64), w).to(self.torch.int64)

    def take(self, table: Any, idx: Any) -> Any:
        return self.torch.index_select(table, 0, idx.reshape(-1)).view(idx.shape)

    def clip(self, a: Any, lo: Any, hi: Any) -> Any:
        return self.torch.clamp(a, lo, hi)

    def where(self, mask: Any, a: Any, b: Any) -> Any:
        t = self.torch
        a = a if isinstance(a, t.Tensor) else t.tensor(a, dtype=t.int64, device=self.device)
        b = b if isinstance(b, t.Tensor) else t.tensor(b, dtype=t.int64, device=self.device)
        return t.where(mask, a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return self.torch.maximum(a, b)

    def floordiv(self, a: Any, b: Any) -> Any:
        return self.torch.div(a, b, rounding_mode="floor")

    def rowmax(self, a: Any) -> Any:
        return a.amax(dim=1, keepdim=True)

    def rowsum(self, a: Any) -> Any:
        return a.sum(dim=1, keepdim=True)


EXACT_ENGINES = ("torch", "numpy")


def engine_ops(engine: str, device: str = "cpu") -> NumpyOps | TorchOps:
    if engine == "numpy":
        if device != "cpu":
            raise QuantizeError("the numpy engine runs on the CPU only")
        return NumpyOps()
    if engine == "torch":
        return TorchOps(device)
    raise QuantizeError(f"unknown engine {engine!r}; choose one of {', '.join(EXACT_ENGINES)}")


# ----------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Fixed:
    """An int64 array v meaning v · 2^-bits. `wide`: a product (or a sum with one) whose bits
    beyond A are still to be rounded away, half up, when it is read by a table, a matmul, a
    product, a division or the state store (lazily: c = (f·c + i·g + ½) >> P)."""

    v: Any
    bits: int
    wide: bool = False


def _round(v: Any, k: int) -> Any:
    """v · 2^-k rounded half up (k > 0), in integers: (v + 2^(k−1)) >> k."""
    return (v + (1 << (k - 1))) >> k


def rescale(x: Fixed, bits: int) -> Any:
    """x's integers in units of 2^-bits: exact going up, rounded half up going down."""
    if x.bits >= bits:
        return _round(x.v, x.bits - bits) if x.bits > bits else x.v
    return x.v << (bits - x.bits)


def narrow(x: Fixed) -> Fixed:
    """A wide value rounded to A bits; any other as it is."""
    return Fixed(rescale(x, A_BITS), A_BITS) if x.wide and x.bits > A_BITS else x


def _const(c: float, bits: int) -> int:
    """c · 2^bits as an integer (round half to even; the cells' constants are exact)."""
    return int(np.rint(np.ldexp(c, bits)))


class _Table:
    """f by linear interpolation between integer entries every 2^-STEP along x, read at Z bits
    from `start` (units of 2^-Z), x clipped into [start, start + hi] (constant beyond)."""

    def __init__(self, ops: Any, values: np.ndarray, start: int, hi: int) -> None:
        self.values, self.slopes = ops.array(values), ops.array(_slopes(values))
        self.start, self.hi = start, hi

    def __call__(self, ops: Any, u: Any) -> Any:
        shift = Z_BITS - TABLE_STEP_BITS
        u = ops.clip(u - self.start, 0, self.hi)
        idx, frac = u >> shift, u & ((1 << shift) - 1)
        return ops.take(self.values, idx) + ((ops.take(self.slopes, idx) * frac) >> shift)


def _table_input(x: Fixed) -> Any:
    """x at Z bits, as a table reads it: a wide value rounded half up, a pre-activation (a
    matmul's W + A bits) floored, as the tables have always read the LSTM's gates."""
    x = narrow(x)
    return x.v >> (x.bits - Z_BITS) if x.bits >= Z_BITS else x.v << (Z_BITS - x.bits)


class Interpreter:
    """One engine's copy of the tables, and a Plan's ops over Fixed values."""

    def __init__(self, ops: Any, x_limit: int) -> None:
        self.ops, self.x_limit = ops, x_limit
        t, ct = tables(), cell_tables()
        span = TABLE_RANGE << Z_BITS
        self.sigmoid = _Table(ops, t.sigmoid, -span, 2 * span - 1)
        self.tanh = _Table(ops, t.tanh, -span, 2 * span - 1)
        self.log_sigmoid = _Table(ops, ct.log_sigmoid, -span, 2 * span - 1)
        self.exp = _Table(ops, ct.exp, -(EXP_ARG_RANGE << Z_BITS), EXP_ARG_RANGE << Z_BITS)
        self.span = span

    def _align(self, a: Any, b: Any) -> tuple[Any, Any, int, bool]:
        """Two operands (Fixed or float) as integers at one scale, exactly."""
        if not isinstance(a, Fixed):
            return _const(a, b.bits), b.v, b.bits, b.wide
        if not isinstance(b, Fixed):
            return a.v, _const(b, a.bits), a.bits, a.wide
        bits = max(a.bits, b.bits)
        return rescale(a, bits), rescale(b, bits), bits, a.wide or b.wide

    def run(self, plan: Any, env: dict[str, Any]) -> None:
        """Run plan's ops over `env` (symbol or parameter name -> Fixed), adding their outputs."""
        ops = self.ops
        for op in plan.ops:
            a = [env[x] if isinstance(x, str) else x for x in op.args]
            k = op.kind
            if k == "split":
                x, n = a[0], op.attrs["n"]
                w = x.v.shape[-1] // n
                for j, name in enumerate(op.out):
                    env[name] = Fixed(x.v[:, j * w : (j + 1) * w], x.bits, x.wide)
                continue
            if k == "matmul":
                x = ops.clip(rescale(narrow(a[0]), A_BITS), -self.x_limit, self.x_limit)
                w = a[1]
                r = Fixed(ops.gemm(x, w.v), A_BITS + w.bits)
            elif k in ("add", "sub", "maximum", "gt"):
                u, v, bits, wide = self._align(a[0], a[1])
                if k == "gt":
                    r = u > v
                else:
                    out = u + v if k == "add" else u - v if k == "sub" else ops.maximum(u, v)
                    r = Fixed(out, bits, wide)
            elif k == "where":
                u, v, bits, wide = self._align(a[1], a[2])
                r = Fixed(ops.where(a[0], u, v), bits, wide)
            elif k == "mul":
                r = self._mul(a[0], a[1])
            elif k == "div":
                num, den = (rescale(narrow(x), A_BITS) for x in a)
                den = ops.clip(den, 1, None)  # > 0 by construction (the sLSTM's n ≥ 1)
                r = Fixed(ops.floordiv((num << A_BITS) + (den >> 1), den), A_BITS)
            elif k in ("sigmoid", "tanh", "log_sigmoid"):
                u = _table_input(a[0])
                r = Fixed(getattr(self, k)(ops, u), A_BITS)
                if k == "log_sigmoid":  # below the table, log σ(x) = x to well under 2^-P
                    r = Fixed(ops.where(u < -self.span, u, r.v), A_BITS)
            elif k == "exp":  # arguments ≤ 0 (the sLSTM's stabilised gates); above: exp(0)
                r = Fixed(self.exp(ops, ops.clip(_table_input(a[0]), None, 0)), A_BITS)
            else:
                raise QuantizeError(f"the exact engine has no {k!r} operation")
            env[op.out[0]] = r

    def _mul(self, a: Any, b: Any) -> Fixed:
        if not isinstance(a, Fixed):
            a, b = b, a
        if not isinstance(b, Fixed):
            if float(b).is_integer():  # 2σ(…), 1 × …: exact
                return Fixed(a.v * int(b), a.bits, a.wide)
            b = Fixed(_const(b, A_BITS), A_BITS)  # type: ignore[arg-type]
        a, b = narrow(a), narrow(b)
        if a.bits + b.bits > MUL_BITS:  # keep products in int64: round the finer one first
            if a.bits < b.bits:
                a, b = b, a
            keep = max(A_BITS, MUL_BITS - b.bits)
            a = Fixed(rescale(a, keep), keep)
        return Fixed(a.v * b.v, a.bits + b.bits, True)



def _slopes(table: np.ndarray) -> np.ndarray:
    """table[k + 1] − table[k], 0 at the end (read only at a remainder of 0)."""
    return np.append(np.diff(table), 0)
