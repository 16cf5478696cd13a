"""Log-probabilities of generated tokens, computed only when a request asks for them
(Request.logprobs): each token's log-probability under the distribution it was drawn from, and
the K most likely tokens of that distribution with theirs.

    req = Request(ids, cfg, seed=7, logprobs=3)        # the loop then sends Token events
    for index, token in scored(rows): token.text, token.logprob, token.top

The distribution is choose.py's, exactly: the scores over the temperature, the `allowed` mask,
top-k, then top-p (tokens they leave out have -inf and are never among the top K). Greedy
(temperature 0) draws from no distribution: it reports the temperature-1 distribution after the
same mask, top-k and top-p, the model's own view of the token it took.

A row's Token events follow the text it sends: a token is sent once the text it starts in has
been sent, so a stop text (held back while it may be one, then cut) drops the tokens that only
spell it, and a token whose text runs into it keeps only its text before the cut (its
log-probability is the whole token's). The chosen token's text is what the decoder made of it (a
byte-level token that begins a character has "" and the one that ends it the whole character),
so the tokens' texts always add up to the text; an alternative's is its piece as the tokenizer
spells it alone.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from charlstm.config import SampleConfig
from charlstm.generate.choose import ModelOutputError, weights

Top = tuple[tuple[str, float], ...]  # (piece, log-probability), most likely first


class Token(NamedTuple):
    """A row's event: one generated token and its log-probabilities (Request.logprobs)."""

    index: int  # the row (sample) within its request
    text: str
    logprob: float | None  # None: nothing predicted it (the first token of a text read)
    top: Top | None  # the K most likely tokens of the distribution (K = Request.logprobs)


def distribution(
    logits: np.ndarray, cfg: SampleConfig, allowed: np.ndarray | None = None
) -> np.ndarray:
    """The log-probabilities (B, V) float64 that choose() draws from for logits (B, V): -inf
    for a token it cannot choose; temperature 0 reports temperature 1's (module docstring)."""
    z = np.asarray(logits, dtype=np.float64)
    if allowed is not None:
        z = np.where(allowed, z, -np.inf)
    t = cfg.temperature
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        scaled = z / t if t else z
        if not np.isfinite(scaled[np.isfinite(z)]).all():  # so low it overflows: the argmax
            scaled = z
        p = weights(scaled, cfg)
        return np.log(p) - np.log(p.sum(axis=-1, keepdims=True))


def top_of(logp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most likely tokens of each row of log-probabilities (B, V), most likely first:
    ids (B, k') and their log-probabilities (B, k'), k' = min(k, V)."""
    k = min(k, logp.shape[-1])
    if k == 0:
        return np.zeros((len(logp), 0), np.int64), np.zeros((len(logp), 0))
    part = np.argpartition(-logp, k - 1, axis=-1)[:, :k]
    order = np.argsort(-np.take_along_axis(logp, part, axis=-1), axis=-1, kind="stable")
    ids = np.take_along_axis(part, order, axis=-1)
    return ids, np.take_along_axis(logp, ids, axis=-1)


def token_scores(
    logits: np.ndarray,
    cfg: SampleConfig,
    allowed: np.ndarray | None,
    tokens: np.ndarray,
    k: int,
    piece: Any,
) -> list[tuple[float, Top]]:
    """For each row of logits (B, V): the chosen token's log-probability, and the top k as
    (piece(id), log-probability), alternatives choose() left out omitted."""
    if not np.isfinite(logits).all():
        raise ModelOutputError("the model's output holds NaN or infinity")
    logp = distribution(logits, cfg, allowed)
    chosen = logp[np.arange(len(logp)), tokens]
    ids, lps = top_of(logp, k)
    return [(float(lp), tuple((piece(int(t)), float(v)) for t, v in zip(row_ids, row_lps,
                              strict=True) if v > -np.inf))
            for lp, row_ids, row_lps in zip(chosen, ids, lps, strict=True)]  # fmt: skip


class TokenLog:
    """One row's tokens waiting for the text they start in to be sent (module docstring)."""

    __slots__ = ("held", "made", "sent")

    def __init__(self) -> None:
        self.held: list[tuple[int, Token]] = []  # (where its text starts, the token)
        self.made = 0  # characters the row's tokens have spelt
        self.sent = 0  # characters the row has sent

    def push(self, token: Token, sent: str, reason: str | None) -> list[Token]:
        """Take the row's next token, having sent `sent` ("stop"/"length": its last): the
        tokens to send now."""
        self.held.append((self.made, token))
        self.made += len(token.text)
        self.sent += len(sent)
        if reason == "length":
            out, self.held = [t for _, t in self.held], []
            return out
        cut = next((i for i, (start, _) in enumerate(self.held) if start >= self.sent),
                   len(self.held))  # fmt: skip
        out = [t for _, t in self.held[:cut]]
        if reason and out:  # a stop text: the last token sent keeps only its text before it
            start, last = self.held[cut - 1]
            out[-1] = last._replace(text=last.text[: self.sent - start])
        self.held = [] if reason else self.held[cut:]
        return out


def openai_logprobs(tokens: list[Token], offset: int = 0) -> dict[str, list[Any]]:
    """OpenAI's completions `logprobs` object for tokens whose text starts at `offset` of the
    choice's text: tokens, token_logprobs, top_logprobs ({piece: logprob}), text_offset."""
    out: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [],
                                 "text_offset": []}  # fmt: skip
    for token in tokens:
        out["tokens"].append(token.text)
        out["token_logprobs"].append(token.logprob)
        out["top_logprobs"].append(None if token.top is None else _first_of_each(token.top))
        out["text_offset"].append(offset)
        offset += len(token.text)
    return out


def _first_of_each(top: Top) -> dict[str, float]:
    """{piece: logprob}, most likely first; two tokens spelt alike keep the likelier."""
    out: dict[str, float] = {}
    for piece, logprob in top:
        out.setdefault(piece, logprob)
    return out
