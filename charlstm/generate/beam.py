"""Beam search: the K most likely continuations of a prime, over any Stepper (loop.py), so on
either engine and every cell. Deterministic: no temperature, no draws.

    beams = beam_search(stepper, tokenizer, prime_ids, k=4, length=40, stop=("\\n\\n",))
    beams[0].text, beams[0].logprob, beams[0].tokens       # the best first

One step, for the B ≤ K live hypotheses (the stepper's rows, best first):

    logits (B, V) ─ log_softmax in float64 ─ + each row's total ─▶ (B, V) candidate totals
    ranked best first, ties by (row, token id) ─ walked: a candidate that writes a stop text
    or reaches the length is finished and kept aside, the others fill the K live rows
    ─ stepper.pick(state, parents) ─ step(tokens) ─▶ the next logits

It ends when every live hypothesis is behind the K best finished ones (a total only falls as a
text grows), or when all of them reach the length. A total is the natural-log probability of
the tokens generated under the model's own (temperature 1) distribution, the tokens that wrote
a stop text included: the chance the model writes this text, then the stop. The text is
matched against the stop texts by the loop's one matcher (stops.py: the stop text itself is
not part of it), and a byte-level vocabulary's hypotheses are kept valid UTF-8 by the loop's
masks (choose.py): a token the mask rules out is not a candidate, and the totals keep the
model's own probabilities (not renormalised over what the mask allows).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from charlstm.data.tokenizer import AnyTokenizer
from charlstm.generate.choose import ModelOutputError, utf8_masks
from charlstm.generate.loop import Stepper
from charlstm.generate.stops import StopMatcher


@dataclass(frozen=True)
class Beam:
    """One continuation the search found."""

    text: str  # the generated text (not the prime), up to its stop text if one came
    logprob: float  # natural log of its tokens' probability after the prime
    ids: tuple[int, ...]  # the tokens generated (the stop text's included)
    reason: str  # "stop": a stop text came; "length": its tokens were all made

    @property
    def tokens(self) -> int:
        return len(self.ids)


class _Node(NamedTuple):
    """A hypothesis's last token, linked to the one before: K texts share their beginnings,
    so a step costs the same whatever the length."""

    parent: _Node | None
    token: int
    text: str  # the text this token let out (after the stop matcher)


class _Hyp(NamedTuple):
    logprob: float
    node: _Node | None
    held: str  # text the stop matcher holds back (it may begin a stop text)
    pending: bytes  # the bytes of a character begun (a byte-level vocabulary)


class _Spelling:
    """The text a token adds to a hypothesis, as the loop's stream decoder would write it: its
    piece (char, word), or its bytes decoded after those of the character begun (bpe)."""

    def __init__(self, tokenizer: AnyTokenizer) -> None:
        self.table = tokenizer.utf8_rows(1).table if tokenizer.kind == "bpe" else None
        self.piece = tokenizer.piece
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, pending: bytes, token: int) -> tuple[str, bytes]:
        """(the text written, the bytes of a character still unfinished)."""
        if self.table is None:
            return self.piece(token), b""
        self.utf8.setstate((pending, 0))
        text = self.utf8.decode(self.table.token_bytes[token])
        return text, self.utf8.getstate()[0]


def beam_search(
    stepper: Stepper,
    tokenizer: AnyTokenizer,
    prime_ids: np.ndarray,
    k: int,
    length: int,
    stop: tuple[str, ...] = (),
) -> list[Beam]:
    """The k most likely continuations of `prime_ids` (P,) of `length` tokens, or up to the
    first of the `stop` texts, best first (see the module docstring). Fewer than k when fewer
    texts exist; one empty text for length 0."""
    assert k >= 1 and length >= 0
    if length == 0:
        return [Beam("", 0.0, (), "length")]
    spell = _Spelling(tokenizer)
    logits = stepper.prime(prime_ids)
    live = [_Hyp(0.0, None, "", b"")]
    done: list[Beam] = []
    for t in range(1, length + 1):
        total = _totals(logits, live, spell)
        live, parents = _select(total, live, done, k, t == length, spell, stop)
        if not live or (len(done) >= k and done[k - 1].logprob >= live[0].logprob):
            break
        if parents != list(range(len(total))):  # not every row, each once, in order
            stepper.start(stepper.pick(stepper.state(), parents))
        tokens = [h.node.token for h in live if h.node is not None]
        logits = stepper.step(np.array(tokens, dtype=np.int64))
    return done[:k]


def _totals(logits: np.ndarray, live: list[_Hyp], spell: _Spelling) -> np.ndarray:
    """Each candidate's total (B, V): its row's total plus the token's log-probability; -inf
    for a token the UTF-8 mask rules out."""
    z = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(z).all():
        raise ModelOutputError(
            "the model's output holds NaN or infinity: its weights are damaged or diverged"
        )
    z = z - z.max(axis=-1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))  # log_softmax
    if spell.table is not None:
        allowed = utf8_masks(spell.table, [h.pending for h in live])
        if allowed is not None:
            z = np.where(allowed, z, -np.inf)
    return z + np.array([h.logprob for h in live])[:, None]


def _select(
    total: np.ndarray,
    live: list[_Hyp],
    done: list[Beam],
    k: int,
    last: bool,
    spell: _Spelling,
    stop: tuple[str, ...],
) -> tuple[list[_Hyp], list[int]]:
    """Walk the candidates best first: each one that finishes (a stop text, or the `last`
    token) joins `done` (kept sorted, the first k kept), the others become the next live
    hypotheses, up to k; no candidate behind `done`'s k-th can matter, so the walk ends there.
    Returns the live hypotheses and the rows they continue."""
    vocab = total.shape[1]
    nxt: list[_Hyp] = []
    parents: list[int] = []
    for flat in _ranked(total, 2 * k):
        score = float(total.flat[flat])
        if len(nxt) == k or (len(done) >= k and score <= done[k - 1].logprob):
            break
        row, token = divmod(int(flat), vocab)
        hyp = live[row]
        text, pending = spell.push(hyp.pending, token)
        reason = None
        matcher = StopMatcher(stop) if stop else None
        if matcher is not None:
            matcher.held = hyp.held
            text, stopped = matcher.push(text)
            reason = "stop" if stopped else None
        if reason is None and last:
            reason, text = "length", text + (matcher.flush() if matcher is not None else "")
        node = _Node(hyp.node, token, text)
        if reason is None:
            nxt.append(_Hyp(score, node, matcher.held if matcher else "", pending))
            parents.append(row)
        else:
            _keep(done, _finished(node, score, reason), k)
    return nxt, parents


def _ranked(total: np.ndarray, first: int) -> Iterator[int]:
    """The flat indices of the finite candidates, best first, ties in index order (row, then
    token id): the best `first` (and any tied with the last of them) sorted, then the rest."""
    flat = total.ravel()
    if first < flat.size:
        kth = np.partition(flat, flat.size - first)[flat.size - first]
        head = np.flatnonzero(flat >= kth)
        head = head[np.argsort(-flat[head], kind="stable")]
        yield from head[np.isfinite(flat[head])]
        if not np.isfinite(kth):
            return
        tail = np.flatnonzero(flat < kth)
    else:
        tail = np.arange(flat.size)
    tail = tail[np.argsort(-flat[tail], kind="stable")]
    yield from tail[np.isfinite(flat[tail])]


def _finished(node: _Node, logprob: float, reason: str) -> Beam:
    """The Beam whose last token is `node`: its text and tokens, read back along the links."""
    pieces, ids = [], []
    at: _Node | None = node
    while at is not None:
        pieces.append(at.text)
        ids.append(at.token)
        at = at.parent
    return Beam("".join(reversed(pieces)), logprob, tuple(reversed(ids)), reason)


def _keep(done: list[Beam], beam: Beam, k: int) -> None:
    """Insert `beam` into `done` (best first; a tie goes after those found before it), keeping
    the best k."""
    at = len(done)
    while at > 0 and done[at - 1].logprob < beam.logprob:
        at -= 1
    done.insert(at, beam)
    del done[k:]
