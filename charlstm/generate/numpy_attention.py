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
Every array it writes is allocated once per load and written with `out=` (numpy_engine.py's
habit), and what is exact in real arithmetic is folded in once: LN_q's affine part into the
gates, LN_xff's into the Boom's matrix, each bias as one more row of its matrix, W_q centred
so that LN_q needs no mean. That moves results by float32 rounding only
(tests/test_numpy_attention.py holds them to the training block).
"""

from __future__ import annotations

import numpy as np

EPS = 1e-5  # torch.nn.LayerNorm's


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
        # The two matrices take [x | 1], their bias as one more row. W_q's rows and b_q are
        # centred: (x W + b) minus its mean is x (W - W̄) + (b - b̄), so LN_q skips its mean.
        w_q, b_q = w["q.weight"].T.astype(np.float64), w["q.bias"].astype(np.float64)
        self.w_q = _f32(np.vstack([w_q - w_q.mean(axis=1, keepdims=True), b_q - b_q.mean()]))
        # (n ⊙ γ + β) @ W_up + b_up = n @ (γ W_up) + (β @ W_up + b_up): LN_xff in the Boom.
        up = w["up.weight"].T.astype(np.float64)  # (H, 4H)
        self.w_up = _f32(np.vstack([w["ln_xff.weight"][:, None] * up,
                                    w["ln_xff.bias"] @ up + w["up.bias"]]))  # fmt: skip
        self.affine = {name: (_f32(w[f"{name}.weight"]), _f32(w[f"{name}.bias"]))
                       for name in ("ln_mem", "ln_mid", "ln_ff")}  # fmt: skip
        self.mean = np.full((hid, 1), 1.0 / hid, np.float32)  # x @ mean: each row's mean

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
        new = lambda *shape: np.empty(shape, np.float32)  # noqa: E731
        self.n, self.q, self.mix, self.sq, self.boom, self.y = (new(batch, hid) for _ in range(6))
        self.x1, self.n1 = (np.ones((batch, hid + 1), np.float32) for _ in range(2))
        self.x, self.na = self.x1[:, :hid], self.n1[:, :hid]  # [x | 1], [n | 1]
        self.mu, self.var, self.peak, self.total = (new(batch, 1) for _ in range(4))
        self.scores = new(batch, m + 1)
        self.u, self.t = new(batch, 4 * hid), new(batch, 4 * hid)

    def unload(self) -> np.ndarray:
        """The memory (M, B, H), oldest slot first (a copy)."""
        rows = np.roll(self.ring, -(self.head + 1), axis=1)[:, : self.memory]
        return rows.transpose(1, 0, 2).copy()

    def _norm(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """x (B, H) to zero mean and unit variance per row into `out` (may be x): a layer norm
        before its affine part (the block's norms of the same input share it)."""
        np.matmul(x, self.mean, out=self.mu)
        return self._scale(np.subtract(x, self.mu, out=out), out)

    def _scale(self, d: np.ndarray, out: np.ndarray) -> np.ndarray:
        """d (B, H), of zero mean per row, to unit variance per row into `out` (may be d)."""
        np.multiply(d, d, out=self.sq)
        np.matmul(self.sq, self.mean, out=self.var)
        self.var += EPS
        np.sqrt(self.var, out=self.var)
        return np.divide(d, self.var, out=out)

    def _affine(self, n: np.ndarray, name: str, out: np.ndarray) -> np.ndarray:
        weight, bias = self.affine[name]
        np.multiply(n, weight, out=out)
        return np.add(out, bias, out=out)

    def step(self, h: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """h (B, H), the top layer's outputs, read against the memory, which then holds this
        position in place of its oldest. Returns the block's outputs (B, H), float32: `out`,
        else a buffer the next step overwrites."""
        ring, head, batch = self.ring, self.head, len(h)
        n = self._norm(h, self.n)
        s = self._affine(n, "ln_mem", ring[:, head])  # what this position leaves in the memory
        x = self._affine(n, "ln_mid", self.x)
        q = np.matmul(self.x1, self.w_q, out=self.q)  # of zero mean (W_q centred)
        qk = self._scale(q, q)
        qk *= self.q_scale
        qk += self.q_shift  # (B, H): the query, gated and scaled by 1/√H
        e, mix = self.scores, self.mix  # (B, M + 1), (B, H)
        for b in range(batch):  # 2-D products per stream: BLAS's gemv (stacked ones may not be)
            np.matmul(ring[b], qk[b], out=e[b])
        if self.masking:  # empty slots: never attended
            self.mask[:, head] = 0.0  # (this row now holds s)
            e += self.mask
            self.masking -= 1
        np.maximum.reduce(e, axis=1, keepdims=True, out=self.peak)
        e -= self.peak
        np.exp(e, out=e)
        np.add.reduce(e, axis=1, keepdims=True, out=self.total)
        for b in range(batch):
            np.matmul(e[b], ring[b], out=mix[b])
        mix *= self.g_v
        mix /= self.total  # the softmax's division, on H numbers instead of M + 1
        mix += x  # a = x + g ⊙ Σ_j w_j s_j
        n = self._norm(mix, self.na)
        u = np.matmul(self.n1, self.w_up, out=self.u)  # (B, 4H), LN_xff folded in
        np.multiply(u, -1.702, out=self.t)  # GELU: u·σ(1.702u) = u / (1 + exp(-1.702u))
        np.exp(self.t, out=self.t)
        self.t += 1.0
        u /= self.t
        np.add.reduce(u.reshape(batch, -1, s.shape[1]), axis=1, out=self.boom)  # the chunk sum
        y = self._affine(n, "ln_ff", self.y if out is None else out)
        y += self.boom
        self.head = (head + 1) % (self.memory + 1)
        return y
