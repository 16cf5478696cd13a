"""The integer-exact language model: any cell's next-token frequencies, the same integers on
every machine, thread count and engine, for the coder (compress/codec.py).

    m = ExactModel.from_model(net, start_token=nl)  # quantise once
    run = m.start(batch, engine="torch")            # B streams from a zero state
    freqs = run.frequencies()                       # (B, V + 1) int64 numpy, escape last
    run.advance(tokens, hold)                       # one token per stream

Each layer runs the cell's traced plan on compress/exact_ops.py's fixed-point arithmetic; the
softmax is an integer exp table over (max logit − logit), giving integer frequencies that sum
to exactly 2^24 − (V + 1), each symbol then getting + 1 from the coder. `fingerprint` hashes
the plan, the quantised weights, the tables and the constants, so a file names the exact
arithmetic that made it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from charlstm.compress.exact_ops import (
    A_BITS,
    C_LIMIT,
    CODER_BITS,
    ESCAPE_WEIGHT,
    EXACT_ENGINES,
    EXP_ARG_RANGE,
    EXP_BITS,
    EXP_RANGE,
    EXP_STEP_BITS,
    MUL_BITS,
    TABLE_RANGE,
    TABLE_STEP_BITS,
    W_BITS,
    Z_BITS,
    Fixed,
    Interpreter,
    NumpyOps,
    QuantizeError,
    TorchOps,
    cell_tables,
    engine_ops,
    narrow,
    rescale,
    tables,
)
from charlstm.errors import EXIT_USAGE

__all__ = ["EXACT_ENGINES", "ExactModel", "ExactRun", "QuantizeError"]

_EXACT_LIMIT = 1 << 52  # float64 integers are exact below 2^53; keep a bit in hand
_WEIGHT_LIMIT = 1 << 40  # |w_q| below this keeps int64 column sums of any real layer exact

# ----------------------------------------------------------------------------------- model

NO_ATTENTION = "compress does not support --attention models (no integer-exact attention)"


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


def _exact_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w for integer matrices whose sums were checked below 2^52: exact in float64."""
    return (x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)


# The bits each parameter role is quantised at: matrices and diagonals multiply a value at A.
ROLE_BITS = {"in": W_BITS, "hidden": W_BITS, "diag": W_BITS, "q": W_BITS, "r": W_BITS,
             "bias": W_BITS + A_BITS}  # fmt: skip
# sha256 of the LSTM's plan (export/trace.py) when this engine's arithmetic was first pinned:
# while cells/lstm.py traces to it, an LSTM keeps the fingerprint files were written with.
LSTM_PLAN = "ae210b3beaffd4f8"


def _plan_digest(plan: Any) -> str:
    return hashlib.sha256(json.dumps(plan.to_json(), sort_keys=True).encode()).hexdigest()


class ExactModel:
    """A char/BPE language model of any cell in integers, giving the frequencies (B, V + 1) the
    coder uses for the next token of each of B streams, the last column being the escape. The
    cell's step is its traced plan (export/trace.py), run over Fixed values.

        m = ExactModel.from_model(net, start_token=nl)  # quantise once
        run = m.start(batch, engine="torch")            # a batch of streams from a zero state
        freqs = run.frequencies()                       # (B, V + 1) int64 numpy
        run.advance(tokens, hold)                       # feed one token per stream
    """

    def __init__(self, plan: Any, embed: np.ndarray, table0: np.ndarray | None,
                 layers: list[dict[str, np.ndarray]], bits: dict[str, int], head: np.ndarray,
                 head_bias: np.ndarray, start_token: int, x_limit: int) -> None:  # fmt: skip
        self.plan = plan
        self.embed = embed  # (V, E) at A bits (read only by an INPUT_GATED cell)
        self.table0 = table0  # (V, G·H): e_q @ w_x + b of layer 0 at W + A; None: INPUT_GATED
        self.layers = layers  # per layer: the bound parameters (cells.base.bind), quantised
        self.bits = bits  # parameter name -> its bits
        self.head, self.head_bias = head, head_bias  # (H, V) at W; (V,) at W + A
        self.start_token = start_token
        self.x_limit = x_limit  # matmul operands are clipped to ±x_limit (units of 2^-A)
        self.vocab_size = int(embed.shape[0])
        self.hidden = int(head.shape[0])
        self.input_gated = plan.inputs[0] == "x"
        self._fingerprint: bytes | None = None

    @classmethod
    def from_model(cls, model: Any, start_token: int) -> ExactModel:
        """Quantise a LanguageModel of any cell with a full softmax; QuantizeError if not."""
        from charlstm.cells import CELLS
        from charlstm.cells.base import bind, fact, params
        from charlstm.export.trace import trace
        from charlstm.model.weights import FUSED_BLOCKS, _blocks, step_weights

        if model.cfg.attention:  # its softmax over the memory has no integer form here
            raise QuantizeError(NO_ATTENTION, EXIT_USAGE)
        sw = step_weights(model)
        if sw.w_out is None:
            raise QuantizeError("compress needs a full softmax, not an adaptive one")
        cell = CELLS[sw.cell]
        plan = trace(cell, **sw.options)
        roles = params(cell, **sw.options)
        bits = {name: ROLE_BITS[role] for name, role in roles.items()}

        def f64(t: Any) -> np.ndarray:
            return t.detach().cpu().double().numpy()  # float32 → float64 is exact

        fused = FUSED_BLOCKS.get(type(model.rnn).__name__)
        layers = []
        for k, stored in enumerate(sw.layers):
            layer = {n: _quantise(f64(t), bits[n]) for n, t in bind(cell, stored).items()}
            if fused is not None and "b_h" not in roles:  # two biases only ever summed:
                b_ih, b_hh = (f64(_blocks(getattr(model.rnn, f"bias_{n}_l{k}"), fused,
                                          cell.BLOCKS)) for n in ("ih", "hh"))  # fmt: skip
                layer["b"] = _quantise(b_ih, bits["b"]) + _quantise(b_hh, bits["b"])  # apart
            layers.append(layer)
        embed = _quantise(f64(sw.embed), A_BITS)
        table0 = None
        # The largest |x| a matmul reads: |h| ≤ the cell's H_BOUND (1 for all but the min
        # cells), and each Mogrifier round multiplies x (or h) by 2σ < 2; clipped there.
        rounds = max(sum(r == "q" for r in roles.values()), sum(r == "r" for r in roles.values()))
        gated = int(np.abs(embed).max(initial=0)) if plan.inputs[0] == "x" else 0
        x_limit = max(fact(cell, "H_BOUND") << A_BITS, gated) << rounds
        for k, layer in enumerate(layers):
            for name in plan.params + (() if plan.inputs[0] == "x" else ("w_x",)):
                if roles[name] in ("in", "hidden", "q", "r") and not (k == 0 and name == "w_x"):
                    what = "layer-0 weights" if k == 0 else f"layer-{k} weights"
                    _check_exact(layer[name], x_limit, what)
        if plan.inputs[0] != "x":
            _check_exact(layers[0]["w_x"], int(np.abs(embed).max(initial=0)), "embeddings")
            table0 = _exact_matmul(embed, layers[0]["w_x"]) + layers[0]["b"]
        head = _quantise(f64(sw.w_out), W_BITS)
        _check_exact(head, x_limit, "output weights")
        head_bias = _quantise(f64(sw.b_out), W_BITS + A_BITS)
        return cls(plan, embed, table0, layers, bits, head, head_bias, start_token, x_limit)

    def fingerprint(self) -> bytes:
        """8 bytes naming the arithmetic: the plan, the quantised weights, the tables and the
        constants. An LSTM whose plan is the pinned one hashes what it always did (its files
        keep decoding); any other plan is hashed itself."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            constants = [W_BITS, A_BITS, Z_BITS, TABLE_STEP_BITS, TABLE_RANGE, C_LIMIT,
                         EXP_STEP_BITS, EXP_RANGE, EXP_BITS, CODER_BITS, ESCAPE_WEIGHT,
                         self.start_token]  # fmt: skip
            t = tables()
            if self.plan.cell == "lstm" and _plan_digest(self.plan)[:16] == LSTM_PLAN:
                h.update(json.dumps(constants).encode())
                ls = self.layers
                arrays = [self.table0, ls[0]["w_h"],
                          *(np.concatenate([p["w_x"], p["w_h"]]) for p in ls[1:]),
                          *(p["b"] for p in ls[1:])]  # fmt: skip
            else:
                constants += [self.x_limit, MUL_BITS, EXP_ARG_RANGE]
                h.update(json.dumps([constants, self.plan.to_json()], sort_keys=True).encode())
                ct = cell_tables()
                named = [self.embed] + [p[n] for p in self.layers for n in sorted(p)]
                arrays = [*named, *([] if self.table0 is None else [self.table0]),
                          ct.log_sigmoid, ct.exp]  # fmt: skip
            arrays += [self.head, self.head_bias, t.sigmoid, t.tanh, t.exp]
            for a in arrays:
                h.update(json.dumps(a.shape).encode())
                h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
            self._fingerprint = h.digest()[:8]
        return self._fingerprint

    def start(self, batch: int, engine: str = "torch", device: str = "cpu") -> ExactRun:
        return ExactRun(self, batch, engine_ops(engine, device))


class ExactRun:
    """B streams of one ExactModel stepping together on one engine. The state is per layer one
    int64 (B, H) array per state part, at A bits, clipped to ±C_LIMIT when stored."""

    def __init__(self, model: ExactModel, batch: int, ops: NumpyOps | TorchOps) -> None:
        self.m, self.ops, self.batch = model, ops, batch
        self.interp = Interpreter(ops, model.x_limit)
        plan = model.plan

        def fixed(name: str, a: np.ndarray) -> Fixed:
            matrix = a.ndim == 2
            return Fixed(ops.array(a.astype(np.float64) if matrix else a), model.bits[name])

        self._params = [{n: fixed(n, a) for n, a in layer.items()} for layer in model.layers]
        self._table0 = None if model.table0 is None else ops.array(model.table0)
        self._embed = ops.array(model.embed)
        self._head = ops.array(model.head.astype(np.float64))
        self._head_bias = ops.array(model.head_bias)
        self._exp = ops.array(tables().exp)
        parts = plan.inputs[1:]
        self.state = [[ops.zeros((batch, model.hidden)) for _ in parts] for _ in model.layers]
        self._freqs = np.zeros((batch, model.vocab_size + 1), dtype=np.int64)
        self.advance(np.full(batch, model.start_token, dtype=np.int64))

    def advance(self, tokens: np.ndarray, hold: np.ndarray | None = None) -> None:
        """Feed tokens (B,) int; streams where `hold` (B,) is true keep their state and their
        frequencies, as if nothing had been fed (a token the model could not see)."""
        ops, m, plan = self.ops, self.m, self.m.plan
        held = np.flatnonzero(hold) if hold is not None else np.zeros(0, dtype=np.int64)
        if len(held):
            rows = ops.array(held)
            saved = [[s[rows] for s in layer] for layer in self.state]  # copies
            saved_freqs = self._freqs[held].copy()
        idx = ops.array(np.asarray(tokens, dtype=np.int64))
        below: Fixed | None = None
        for k, p in enumerate(self._params):
            if m.input_gated:
                first = below if k else Fixed(self._embed[idx], A_BITS)
            elif k == 0:
                first = Fixed(self._table0[idx], W_BITS + A_BITS)
            else:  # zx = h_{k-1} @ w_x + b; h_{k-1} is stored at A bits
                x = ops.clip(below.v, -m.x_limit, m.x_limit)  # type: ignore[union-attr]
                first = Fixed(ops.gemm(x, p["w_x"].v) + p["b"].v, W_BITS + A_BITS)
            env: dict[str, Any] = dict(p)
            env[plan.inputs[0]] = first
            for name, v in zip(plan.inputs[1:], self.state[k], strict=True):
                env[name] = Fixed(v, A_BITS)
            self.interp.run(plan, env)
            new = [ops.clip(rescale(narrow(env[s]), A_BITS), -C_LIMIT, C_LIMIT)
                   for s in plan.outputs]  # fmt: skip
            self.state[k] = new
            below = Fixed(new[0], A_BITS)
        x = ops.clip(self.state[-1][0], -m.x_limit, m.x_limit)
        logits = ops.gemm(x, self._head) + self._head_bias
        self._freqs = self._frequencies(logits)
        if len(held):
            for layer, old in zip(self.state, saved, strict=True):
                for s, o in zip(layer, old, strict=True):
                    s[rows] = o
            self._freqs[held] = saved_freqs

    def _frequencies(self, logits: Any) -> np.ndarray:
        """Integer softmax: weights exp(-(max − logit)) from the table, scaled so that they and
        the escape sum to 2^24 − (V + 1). Returns (B, V + 1) int64 numpy."""
        ops = self.ops
        drop = (ops.rowmax(logits) - logits) >> (W_BITS + A_BITS - EXP_STEP_BITS)
        drop = ops.clip(drop, 0, len(tables().exp) - 1)  # past the table's end: weight 0
        weights = ops.take(self._exp, drop)  # (B, V), each ≤ 2^30
        room = (1 << CODER_BITS) - (self.m.vocab_size + 1) - ESCAPE_WEIGHT
        freqs = ops.numpy(ops.floordiv(weights * room, ops.rowsum(weights)))  # < 2^54
        # Flooring leaves < V over; the escape takes it (no argmax, so no tie-breaking rule).
        escape = (1 << CODER_BITS) - (self.m.vocab_size + 1) - freqs.sum(axis=1, keepdims=True)
        return np.concatenate([freqs, escape], axis=1)

    def frequencies(self) -> np.ndarray:
        """(B, V + 1) int64: the next token's frequencies of each stream, escape last."""
        return self._freqs
