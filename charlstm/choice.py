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
from charlstm.errors import CharlstmError, OptionError

MAX_SEED = 2**63 - 1


class ModelOutputError(CharlstmError):
    """The model's next-token scores are not numbers."""


def check_seed(seed: int | None) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
        raise OptionError(f"{{seed}} must be a whole number or None, not {type(seed).__name__}")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise OptionError(f"{{seed}} must be between 0 and {MAX_SEED:,}, got {seed}")


def seeded(seed: int) -> np.random.Generator:
    """The draws of one sample (or one batch of samples sharing a seed): numpy's PCG64, whose
    stream for a seed numpy keeps stable across versions and machines."""
    return np.random.Generator(np.random.PCG64(seed))


def choose(logits: np.ndarray, cfg: SampleConfig, u: np.ndarray) -> np.ndarray:
    """The next token of each row of logits (B, V), given one uniform draw in [0, 1) per row
    (B,): the first token whose cumulative probability exceeds the draw. Temperature 0 (or one
    so low it overflows) is the argmax, and uses no draw's value."""
    z = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(z).all():
        raise ModelOutputError(
            "the model's output holds NaN or infinity: its weights are damaged or diverged"
        )
    if cfg.temperature == 0:
        return z.argmax(axis=-1)
    with np.errstate(over="ignore"):
        z = z / cfg.temperature
    if not np.isfinite(z).all():
        return np.asarray(logits).argmax(axis=-1)
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
    cumulative = np.cumsum(p, axis=-1)
    target = np.asarray(u, dtype=np.float64) * cumulative[:, -1]
    picked = (cumulative <= target[:, None]).sum(axis=-1)
    return np.minimum(picked, vocab - 1)
