"""--attention's block one position at a time in numpy: model/attention.py's equations for a
window of one, over a buffer of the top layer's last M outputs. NumpyStepper (numpy_engine.py)
runs it between the recurrent layers and the head; torch's Stepper calls the training block
itself, and the two give the same text for a seed (tests/test_attention_engines.py).

    block.load(past)        # the state's memory (M, B, H), oldest first, all-zero slots empty
    y = block.step(h)       # h (B, H) -> y (B, H); this position replaces the oldest slot
    past = block.unload()   # the memory again, oldest first

Inside, the memory is a ring: a step writes one slot (no shifting), since attention does not
depend on the order of its slots; which slots hold a state is kept beside it (found once per
load). So a step costs O(M·H) per stream, whatever the length of the text: the scores against
the M slots and their weighted sum.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-5  # torch.nn.LayerNorm's


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class NumpyAttention:
    """The block with the weights `w` (the model file's attention.* tensors, by their names
    without the prefix) and a memory of `memory` slots."""

    def __init__(self, w: dict[str, np.ndarray], memory: int) -> None:
        self.w, self.memory = w, memory
        self.hidden = w["a_q"].shape[0]
        self.g_q, g_k = _sigmoid(w["a_q"]), _sigmoid(w["a_k"])
        self.g_k = g_k / np.float32(np.sqrt(self.hidden))  # the 1/√H scale folded in
        c, f = np.split(w["over.weight"] @ _sigmoid(w["a_v"]) + w["over.bias"], 2)
        self.g_v = (_sigmoid(f) * np.tanh(c)).astype(np.float32)  # the value gate (Overparam)
        self.w_q, self.w_up = w["q.weight"].T.copy(), w["up.weight"].T.copy()  # (H, ·)

    @staticmethod
    def _norm(x: np.ndarray) -> np.ndarray:
        """x (B, H) to zero mean and unit variance per row: a layer norm before its affine
        part (the block's norms of the same input share it)."""
        d = x - x.mean(axis=-1, keepdims=True)
        return d * (1.0 / np.sqrt(np.einsum("bh,bh->b", d, d)[:, None] / x.shape[-1] + EPS))

    def _affine(self, n: np.ndarray, name: str) -> np.ndarray:
        return n * self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def load(self, past: np.ndarray) -> None:
        """Take the memory (M, B, H) of a state (copied), oldest slot first."""
        self.ring = np.ascontiguousarray(past.transpose(1, 0, 2), dtype=np.float32)  # (B, M, H)
        self.empty = ~self.ring.any(axis=2)  # (B, M): slots that hold no state yet
        self.head = 0  # the oldest slot, the next to be written

    def unload(self) -> np.ndarray:
        """The memory (M, B, H), oldest slot first (a copy)."""
        return np.roll(self.ring, -self.head, axis=1).transpose(1, 0, 2).copy()

    def step(self, h: np.ndarray) -> np.ndarray:
        """h (B, H), the top layer's outputs, read against the memory, which then holds this
        position in place of its oldest. Returns the block's outputs (B, H), float32."""
        w, hid = self.w, self.hidden
        n = self._norm(h)
        s = self._affine(n, "ln_mem")  # (B, H): what this position leaves in the memory
        x = self._affine(n, "ln_mid")
        q = self.g_q * self._affine(self._norm(x @ self.w_q + w["q.bias"]), "ln_q")
        qk = (q * self.g_k)[:, :, None]  # (B, H, 1)
        slots = self.ring  # (B, M, H), the oldest at self.head
        scores = np.concatenate([(slots @ qk)[:, :, 0], (s[:, None] @ qk)[:, :, 0]], axis=1)
        scores[:, :-1][self.empty] = -np.inf  # empty slots: never attended
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        e /= e.sum(axis=1, keepdims=True)  # (B, M + 1)
        mix = (e[:, None, :-1] @ slots)[:, 0] + e[:, -1:] * s
        a = x + self.g_v * mix
        n = self._norm(a)
        u = self._affine(n, "ln_xff") @ self.w_up + w["up.bias"]  # (B, 4H)
        u *= _sigmoid(1.702 * u)
        y = self._affine(n, "ln_ff") + u.reshape(len(h), -1, hid).sum(axis=1)
        slots[:, self.head] = s  # the oldest leaves, this one comes in
        self.empty[:, self.head] = False
        self.head = (self.head + 1) % self.memory
        return y.astype(np.float32)
