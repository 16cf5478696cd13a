"""--attention's block one position at a time in numpy: model/attention.py's equations for a
window of one, over a buffer of the top layer's last M outputs. NumpyStepper (numpy_engine.py)
runs it between the recurrent layers and the head; torch's Stepper calls the training block
itself, and the two give the same text for a seed (tests/test_attention_engines.py).

    block.load(past)        # the state's memory (M, B, H), oldest first, all-zero slots empty
    y = block.step(h)       # h (B, H) -> y (B, H), a buffer the next step overwrites (or out=)
    past = block.unload()   # the memory again, oldest first

Inside, the memory is a ring of M + 1 rows per stream: a position attends to the M slots
before it and to itself, so a step writes its own s over the row that left the memory at the
step before, then reads all M + 1 rows at once (attention does not depend on their order):

    ring[b]   row:  0    1   …  head  …   M        head: this step's row (the oldest of the
                   s_j  s_j     s_t       s_j      last step, now gone); the M others are the
                                                   memory, oldest at head + 1

Empty slots (all zero when loaded) are kept as an additive mask, -inf where empty, 0 once
written (added to the scores until every row has been written). So a step costs O(M·H) per
stream, whatever the length of the text: two matrix-vector products over the ring (scores,
then their weighted sum; per stream, so BLAS runs them), the query's H×H and the Boom's H×4H.

A step is some forty numpy calls on short vectors, so what each call costs matters as much as
the arithmetic. Every array it writes is allocated once per load and written in place. One
stream works on 1-D rows (an elementwise call on them costs half what it costs on 2-D arrays),
and two or three streams take the two matrices' products a stream at a time (numpy_ops's
matmul_calls: BLAS's gemm is slow for so few rows). What is exact in real arithmetic is folded
in once: LN_q's affine part into the gates, LN_xff's and GELU's -1.702 into the Boom's matrix,
ε into the variance's product, W_q's bias as one more row and W_q centred so that LN_q needs
no mean. The softmax skips subtracting its peak where the weights bound every score well
inside exp's range. That moves results by float32 rounding only
(tests/test_numpy_attention.py holds them to the training block).
"""

from __future__ import annotations

import math

import numpy as np

from charlstm.generate.numpy_ops import matmul_calls

EPS = 1e-5  # torch.nn.LayerNorm's
GELU = 1.702  # SHA-RNN's GELU, x·σ(1.702x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


class NumpyAttention:
    """The block with the weights `w` (the model file's attention.* tensors, by their names
    without the prefix) and a memory of `memory` slots."""

    def __init__(self, w: dict[str, np.ndarray], memory: int) -> None:
        self.memory = memory
        hid = self.hidden = w["a_q"].shape[0]
        # q·k/√H with k = σ(a_k) ⊙ s and q = σ(a_q) ⊙ (n ⊙ γ_q + β_q), n LN_q's normed input:
        # the gates, the scale and LN_q's affine part as one scale and shift of n.
        gate = _sigmoid(w["a_q"]) * _sigmoid(w["a_k"]) / np.float32(np.sqrt(hid))
        self.q_scale, self.q_shift = _f32(gate * w["ln_q.weight"]), _f32(gate * w["ln_q.bias"])
        c, f = np.split(w["over.weight"] @ _sigmoid(w["a_v"]) + w["over.bias"], 2)
        self.g_v = _f32(_sigmoid(f) * np.tanh(c))  # the value gate (Overparam)
        # W_q takes [x | 1], its bias as one more row. Its rows and b_q are centred:
        # (x W + b) minus its mean is x (W - W̄) + (b - b̄), so LN_q skips its mean.
        w_q, b_q = w["q.weight"].T.astype(np.float64), w["q.bias"].astype(np.float64)
        self.w_q = _f32(np.vstack([w_q - w_q.mean(axis=1, keepdims=True), b_q - b_q.mean()]))
        # z = -1.702 (LN_xff(a) @ W_up + b_up) = n @ (-1.702 γ W_up) - 1.702 (β @ W_up + b_up),
        # so GELU(u) = z / (1 + e^z) / -1.702, the last factor taken in the chunks' sum. (The
        # bias is added apart: a product over H rows runs faster than over H + 1.)
        up = w["up.weight"].T.astype(np.float64)  # (H, 4H)
        self.w_up = _f32(-GELU * w["ln_xff.weight"][:, None] * up)
        self.b_up = _f32(-GELU * (w["ln_xff.bias"] @ up + w["up.bias"]))
        # y = LN_ff(a) + Σ_c GELU(u)_c: one product of these weights with [z_0 … z_3 | LN_ff(a)].
        self.sum_boom = np.array([-1.0 / GELU] * 4 + [1.0], np.float32)
        self.affine = {name: (_f32(w[f"{name}.weight"]), _f32(w[f"{name}.bias"]))
                       for name in ("ln_mem", "ln_mid", "ln_ff")}  # fmt: skip
        self.mean = np.full((hid, 1), 1.0 / hid, np.float32)  # x @ mean: each row's mean
        self.mean_eps = np.full((hid + 1, 1), 1.0 / hid, np.float32)  # [d² | H·ε] -> var + ε
        # |score| ≤ |q|·|s|, and a normed row's norm is at most √H: bounds from the weights.
        root = np.sqrt(hid)
        self.q_norm = float(np.abs(self.q_scale).max() * root + np.linalg.norm(self.q_shift))
        gamma, beta = self.affine["ln_mem"]
        self.s_norm = float(np.abs(gamma).max() * root + np.linalg.norm(beta))

    def load(self, past: np.ndarray) -> None:
        """Take the memory (M, B, H) of a state (copied), oldest slot first; allocates the
        step's buffers for its B (a fork's own, since numpy_engine forks by copy.copy)."""
        m, batch, hid = past.shape
        self.ring = np.zeros((batch, m + 1, hid), np.float32)  # (B, M + 1, H)
        self.ring[:, :m] = past.transpose(1, 0, 2)
        self.mask = np.where(self.ring.any(axis=2), 0.0, -np.inf).astype(np.float32)
        self.head = m  # the spare row: the next position's
        # Steps for which the mask still matters: every row is written within M + 1 steps.
        self.masking = m + 1 if np.isinf(self.mask[:, :m]).any() else 0
        # Without its peak subtracted, the softmax must neither overflow nor lose every term.
        held = float(np.linalg.norm(self.ring, axis=2).max())
        self.shifting = self.q_norm * max(self.s_norm, held) > 80.0 - math.log(m + 1)
        # Every buffer is (B, ·); a step works on `rows` of it: for one stream its row alone.
        rows = (lambda a: a[0]) if batch == 1 else (lambda a: a)  # noqa: E731
        new = lambda *shape: np.zeros((batch, *shape), np.float32)  # noqa: E731
        self.x1 = rows(np.ones((batch, hid + 1), np.float32))  # [x | 1], W_q's input
        self.x = self.x1[..., :hid]
        self.q2, self.e2, self.mix2 = new(hid), new(m + 1), new(hid)  # e: scores, then exp
        self.q, self.scores, self.mix = rows(self.q2), rows(self.e2), rows(self.mix2)
        self.n, self.na = rows(new(hid)), rows(new(hid))
        self.sq1 = rows(np.full((batch, hid + 1), hid * EPS, np.float32))  # [d² | H·ε]
        self.sq = self.sq1[..., :hid]
        self.mu, self.var, self.total = rows(new(1)), rows(new(1)), rows(new(1))
        boom = rows(new(5 * hid))  # [z_0 … z_3 | LN_ff(a)], the Boom's before the chunk sum
        self.z, self.ff, self.t = boom[..., : 4 * hid], boom[..., 4 * hid :], rows(new(4 * hid))
        self.boom = boom.reshape(*boom.shape[:-1], 5, hid)
        self.slots = [rows(self.ring[:, j]) for j in range(m + 1)]  # the row a step writes
        self.streams = [(self.ring[b], self.q2[b], self.e2[b], self.mix2[b])
                        for b in range(batch)]  # fmt: skip
        self.one, self.y2 = batch == 1, new(hid)
        self.query_product = matmul_calls(self.x1, self.w_q, self.q)
        self.boom_product = matmul_calls(self.na, self.w_up, self.z)

    def unload(self) -> np.ndarray:
        """The memory (M, B, H), oldest slot first (a copy)."""
        rows = np.roll(self.ring, -(self.head + 1), axis=1)[:, : self.memory]
        return rows.transpose(1, 0, 2).copy()

    def _norm(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """x (B?, H) to zero mean and unit variance per row into `out` (may be x): a layer norm
        before its affine part (the block's norms of the same input share it)."""
        np.matmul(x, self.mean, self.mu)
        return self._scale(np.subtract(x, self.mu, out), out)

    def _scale(self, d: np.ndarray, out: np.ndarray) -> np.ndarray:
        """d (B?, H), of zero mean per row, to unit variance per row into `out` (may be d)."""
        np.multiply(d, d, self.sq)
        np.matmul(self.sq1, self.mean_eps, self.var)
        np.sqrt(self.var, self.var)
        return np.divide(d, self.var, out)

    def _affine(self, n: np.ndarray, name: str, out: np.ndarray) -> np.ndarray:
        weight, bias = self.affine[name]
        np.multiply(n, weight, out)
        return np.add(out, bias, out)

    def step(self, h: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """h (B, H), the top layer's outputs, read against the memory, which then holds this
        position in place of its oldest. Returns the block's outputs (B, H), float32: `out`,
        else a buffer the next step overwrites."""
        head = self.head
        y2 = self.y2 if out is None else out
        h, y = (h[0], y2[0]) if self.one else (h, y2)  # B? : one stream's rows are 1-D
        n = self._norm(h, self.n)
        self._affine(n, "ln_mem", self.slots[head])  # what this position leaves in the memory
        x = self._affine(n, "ln_mid", self.x)
        for call in self.query_product:
            call()
        q = self.q  # of zero mean (W_q centred)
        self._scale(q, q)
        np.multiply(q, self.q_scale, q)
        np.add(q, self.q_shift, q)  # the query, gated and scaled by 1/√H
        for ring, qk_b, e_b, _ in self.streams:  # per stream: BLAS's gemv
            np.matmul(ring, qk_b, e_b)
        e = self.scores  # (B?, M + 1)
        if self.masking:  # empty slots: never attended
            self.mask[:, head] = 0.0  # (this row now holds s)
            np.add(self.e2, self.mask, self.e2)
            self.masking -= 1
        if self.shifting:
            np.subtract(self.e2, self.e2.max(axis=1, keepdims=True), self.e2)
        np.exp(e, e)
        np.add.reduce(e, axis=-1, keepdims=True, out=self.total)
        for ring, _, e_b, mix_b in self.streams:
            np.matmul(e_b, ring, mix_b)
        mix = self.mix
        np.multiply(mix, self.g_v, mix)
        np.divide(mix, self.total, mix)  # the softmax's division, on H numbers, not M + 1
        np.add(mix, x, mix)  # a = x + g ⊙ Σ_j w_j s_j
        n = self._norm(mix, self.na)
        for call in self.boom_product:
            call()
        z = self.z  # (B?, 4H), LN_xff and -1.702 folded in
        np.add(z, self.b_up, z)
        np.exp(z, self.t)
        np.add(self.t, 1.0, self.t)
        np.divide(z, self.t, z)  # -1.702 GELU(u)
        self._affine(n, "ln_ff", self.ff)
        np.matmul(self.sum_boom, self.boom, y)  # LN_ff(a) + the chunk sum
        self.head = (head + 1) % (self.memory + 1)
        return y2
