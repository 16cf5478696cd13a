"""--attention's block one position at a time in numpy: model/attention.py's equations for a
window of one, over the rolling buffer of the top layer's last M outputs (M, B, H), oldest
first, an all-zero slot empty. NumpyStepper (numpy_engine.py) runs it between the recurrent
layers and the head; torch's Stepper calls the training block itself, and the two give the
same text for a seed (tests/test_attention_engines.py).

A step costs O(M·H) per stream, whatever the length of the text: the scores against the M
slots, their weighted sum, the buffer shifted by one.
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

    def _ln(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        var = np.square(x - mean).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + EPS) * self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def step(self, h: np.ndarray, past: np.ndarray) -> np.ndarray:
        """h (B, H), the top layer's outputs; past (M, B, H), shifted in place to take this
        position. Returns the block's outputs (B, H), float32."""
        w, hid = self.w, self.hidden
        s = self._ln(h, "ln_mem")  # (B, H): what this position leaves in the memory
        x = self._ln(h, "ln_mid")
        q = self.g_q * self._ln(x @ self.w_q + w["q.bias"], "ln_q")
        qk = (q * self.g_k)[:, :, None]  # (B, H, 1)
        slots = past.transpose(1, 0, 2)  # (B, M, H)
        scores = np.concatenate([(slots @ qk)[:, :, 0], (s[:, None] @ qk)[:, :, 0]], axis=1)
        scores[:, :-1][~past.any(axis=2).T] = -np.inf  # empty slots: never attended
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        e /= e.sum(axis=1, keepdims=True)  # (B, M + 1)
        mix = (e[:, None, :-1] @ slots)[:, 0] + e[:, -1:] * s
        a = x + self.g_v * mix
        u = self._ln(a, "ln_xff") @ self.w_up + w["up.bias"]  # (B, 4H)
        u *= _sigmoid(1.702 * u)
        y = self._ln(a, "ln_ff") + u.reshape(len(h), -1, hid).sum(axis=1)
        past[:-1] = past[1:]  # the oldest leaves, this one comes in
        past[-1] = s
        return y.astype(np.float32)
