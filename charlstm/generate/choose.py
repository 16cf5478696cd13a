"""The next-token rule every engine shares (torch, numpy, the server): temperature, then top-k
and top-p filtering, then one uniform draw per row, mapped through the cumulative probabilities
in float64, in vocabulary order. It is written once, in numpy and without torch, so that two
engines whose probabilities agree pick the same token from the same seed: they can differ only
when a draw lands within their disagreement (about 1e-6) of a boundary between two tokens.

    rng = seeded(7)                                   # one stream of draws per seed
    ids = choose(logits, cfg, rng.random(len(logits)))   # logits (B, V) -> ids (B,)
"""

from __future__ import annotations

import numpy as np

from charlstm.config import SampleConfig
from charlstm.errors import CharlstmError

MAX_SEED = 2**63 - 1


class ModelOutputError(CharlstmError):
    """The model's next-token scores are not numbers."""


def seeded(seed: int) -> np.random.Generator:
    """The draws of one sample (or one batch of samples sharing a seed): numpy's PCG64, whose
    stream for a seed numpy keeps stable across versions and machines."""
    return np.random.Generator(np.random.PCG64(seed))


def choose(
    logits: np.ndarray, cfg: SampleConfig, u: np.ndarray, allowed: np.ndarray | None = None
) -> np.ndarray:
    """The next token of each row of logits (B, V), given one uniform draw in [0, 1) per row
    (B,): the first token whose cumulative probability exceeds the draw. Temperature 0 (or one
    so low it overflows) is the argmax, and uses no draw's value. `allowed` (B, V) or (1, V)
    bool, from Utf8Rows: only those tokens can be chosen (each row allows at least one)."""
    z = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(z).all():
        raise ModelOutputError(
            "the model's output holds NaN or infinity: its weights are damaged or diverged"
        )
    if allowed is not None:
        z = np.where(allowed, z, -np.inf)
    if cfg.temperature == 0:
        return z.argmax(axis=-1)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = z / cfg.temperature
    if not np.isfinite(scaled[np.isfinite(z)]).all():
        return z.argmax(axis=-1)
    p = weights(scaled, cfg)
    cumulative = np.cumsum(p, axis=-1)
    target = np.asarray(u, dtype=np.float64) * cumulative[:, -1]
    picked = (cumulative <= target[:, None]).sum(axis=-1)
    return np.minimum(picked, p.shape[-1] - 1)


def weights(z: np.ndarray, cfg: SampleConfig) -> np.ndarray:
    """The unnormalised probabilities (B, V) that choose draws from, the top token at 1, given
    the scores already divided by the temperature (B, V) float64: top-k, then top-p."""
    vocab = z.shape[-1]
    if 0 < cfg.top_k < vocab:
        kth = np.partition(z, vocab - cfg.top_k, axis=-1)[:, vocab - cfg.top_k, None]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max(axis=-1, keepdims=True))  # (B, V), the top token at 1
    if cfg.top_p < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")
        ranked = np.take_along_axis(p, order, axis=-1)
        before = (np.cumsum(ranked, axis=-1) - ranked) / ranked.sum(axis=-1, keepdims=True)
        # Drop a token when the tokens before it already reach top_p (the first always stays).
        np.put_along_axis(p, order, np.where(before >= cfg.top_p, 0.0, ranked), axis=-1)
    return p


# ------------------------------------------------------------------------- valid UTF-8 only
# A byte-level vocabulary (BPE) holds all 256 bytes, and a token may hold part of a character:
# left free, sampling can write bytes that are not UTF-8 (shown as U+FFFD). Each row keeps the
# bytes of the character it has begun (`pending`, 0 to 3 bytes); a token may follow only when
# pending + its bytes is UTF-8 so far (a character may stay unfinished at its end), and, where
# that leaves any, only tokens the training text can have made: a non-ASCII byte that occurs in
# no longer token was never seen (an ASCII corpus has none of them).
#
#   pending  E4 B8    needs 1 more byte (k = 1); token  AD 20 E5   = head AD | rest 20 E5
#   allowed: E4 B8 + head is UTF-8 so far, and rest is UTF-8 so far on its own (clean[k])


def _lead(c: int) -> tuple[int, int, int] | None:
    """A lead byte's continuation bytes and its first continuation's range (Unicode table 3-7);
    None for a byte no character starts with."""
    if 0xC2 <= c <= 0xDF:
        return 1, 0x80, 0xBF
    if c == 0xE0:
        return 2, 0xA0, 0xBF
    if c == 0xED:  # not the surrogates
        return 2, 0x80, 0x9F
    if 0xE1 <= c <= 0xEF:
        return 2, 0x80, 0xBF
    if c == 0xF0:
        return 3, 0x90, 0xBF
    if 0xF1 <= c <= 0xF3:
        return 3, 0x80, 0xBF
    if c == 0xF4:  # at most U+10FFFF
        return 3, 0x80, 0x8F
    return None


def utf8_so_far(data: bytes) -> bool:
    """Whether `data` is UTF-8, its last character possibly unfinished."""
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c < 0x80:
            i += 1
            continue
        lead = _lead(c)
        if lead is None:
            return False
        need, lo, hi = lead
        for j in range(1, need + 1):
            if i + j >= n:
                return True
            d = data[i + j]
            if not (lo <= d <= hi if j == 1 else 0x80 <= d <= 0xBF):
                return False
        i += need + 1
    return True


def unfinished(data: bytes) -> bytes:
    """The bytes of the character `data` (UTF-8 so far) leaves unfinished at its end."""
    for i in range(len(data) - 1, max(len(data) - 4, -1), -1):
        c = data[i]
        if c < 0x80:
            return b""
        if c >= 0xC0:
            lead = _lead(c)
            return data[i:] if lead is not None and len(data) - i <= lead[0] else b""
    return b""


class Utf8Table:
    """What each pending character allows of a byte-level vocabulary (the masks are cached:
    a text visits few pending characters)."""

    def __init__(self, token_bytes: list[bytes]) -> None:
        self.token_bytes = token_bytes
        longer = {b for t in token_bytes if len(t) > 1 for b in t}
        self.seen = np.array([not (len(t) == 1 and t[0] >= 0x80 and t[0] not in longer)
                              for t in token_bytes])  # fmt: skip
        # clean[k]: the token's bytes after its first k are UTF-8 so far from a clean start.
        self.clean = [np.array([utf8_so_far(t[k:]) for t in token_bytes]) for k in range(4)]
        self._heads: dict[int, tuple[list[bytes], np.ndarray]] = {}
        self._masks: dict[bytes, np.ndarray | None] = {}

    def allowed(self, pending: bytes) -> np.ndarray | None:
        """(V,) bool: the tokens that may follow `pending`; None: any."""
        if pending not in self._masks:
            self._masks[pending] = self._allowed(pending)
        return self._masks[pending]

    def _allowed(self, pending: bytes) -> np.ndarray | None:
        k = 0
        if pending:
            lead = _lead(pending[0])
            k = lead[0] + 1 - len(pending) if lead is not None else 0
        valid = self.clean[k]
        if k:
            heads, index = self._head_index(k)
            valid = valid & np.array([utf8_so_far(pending + h) for h in heads])[index]
        for mask in (valid & self.seen, valid):
            if mask.any():
                return mask
        return None  # nothing can continue (a vocabulary without all 256 bytes): any token

    def _head_index(self, k: int) -> tuple[list[bytes], np.ndarray]:
        """The distinct first k bytes of the tokens, and each token's index among them."""
        if k not in self._heads:
            found: dict[bytes, int] = {}
            index = np.array([found.setdefault(t[:k], len(found)) for t in self.token_bytes])
            self._heads[k] = (list(found), index)
        return self._heads[k]


class Utf8Rows:
    """Keeps B rows of byte-level tokens valid UTF-8: `allowed()` before each choice (pass it
    to choose), `push(tokens)` after it."""

    def __init__(self, table: Utf8Table, batch: int = 1) -> None:
        self.table = table
        self.pending = [b""] * batch

    def allowed(self) -> np.ndarray | None:
        """(B, V) bool (or (1, V), the same for every row), or None: any token."""
        return utf8_masks(self.table, self.pending)

    def push(self, tokens: np.ndarray) -> None:
        tb = self.table.token_bytes
        self.pending = [unfinished(p + tb[int(t)]) for p, t in zip(self.pending, tokens,
                                                                   strict=True)]  # fmt: skip

    def reset(self) -> None:
        """The rows read whole text (a prime, a user's line): no character is pending."""
        self.pending = [b""] * len(self.pending)


def utf8_masks(table: Utf8Table, pending: list[bytes]) -> np.ndarray | None:
    """What rows with these pending bytes may choose: (B, V) bool (or (1, V), the same for
    every row), or None: any token."""
    if all(p == pending[0] for p in pending):
        mask = table.allowed(pending[0])
        return None if mask is None else mask[None]
    masks = [table.allowed(p) for p in pending]
    every = np.ones(len(table.token_bytes), dtype=bool)
    return np.stack([every if m is None else m for m in masks])
