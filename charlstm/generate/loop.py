"""The generation loop, once: prime → (choose → text → stop → step)*, for every door:
`charlstm sample` (either engine, -N), chat, Model.generate / samples, Session and the
server's batched rows (serve/batching.py).

    req = Request(prime_ids, cfg, seed=7, n=2, stop=("\\n\\n",))
    for index, text in generate(stepper, tokenizer, req): ...   # row, text as it comes

    rows = Rows(stepper, tokenizer)     # the server: B rows of many requests, one stepper
    rows.join(req, state, logits)       # n rows from a primed state (L, 1, H) and logits (1, V),
    rows.join(req)                      # or from a zero state, reading the prime a token a step
    events = rows.advance()             # [(request, Text | Done | Failed), ...]

One advance, for all the rows: a row still reading its prime takes its next token; every other
row chooses one (choose.py: each request draws n uniforms per step from its own generator,
rows with the same options chosen together, a byte-level vocabulary's rows kept valid UTF-8),
decodes it, and matches its stop texts (stops.py); a request that asks for logprobs gets a
Token event per token too (logprobs.py); the rows that finished (length, stop, or a model
error) leave; then one step of the rows left. A request with a pattern (constrain.py) chooses
within its automaton's mask, the end being one more choice; its rows keep their state.
Whoever shares the batch, row i of a request gives the text of `charlstm sample -N n --seed S`'s
sample i.

A Stepper (numpy_engine.NumpyStepper, torch_engine.TorchStepper) runs B streams with numpy
arrays in and out; its state, (h, ...) of (L, B, H) each, is the engine's own arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from charlstm.config import SampleConfig
from charlstm.data.tokenizer import AnyTokenizer, StreamDecoder
from charlstm.generate.choose import ModelOutputError, Utf8Table, choose, seeded, utf8_masks
from charlstm.generate.choose import unfinished as unfinished_char
from charlstm.generate.logprobs import Token, TokenLog, token_scores
from charlstm.generate.stops import StopMatcher

if TYPE_CHECKING:
    from charlstm.generate.constrain import Automaton

State = tuple[Any, ...]  # (h, ...) each (L, B, H): numpy arrays or torch tensors


class Stepper(Protocol):
    vocab_size: int

    def zero_state(self, batch: int) -> State: ...

    def prime(self, ids: np.ndarray, state: State | None = None) -> np.ndarray:
        """Read ids (P,) into one stream from `state` (None: zeros); the logits (1, V) after the
        last, the stepper then standing at batch 1 there."""

    def start(self, state: State) -> None: ...

    def state(self) -> State: ...

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (B,) -> logits (B, V) float32, a buffer the next step may overwrite."""

    def repeat(self, state: State, n: int) -> State: ...  # (L, 1, H) -> (L, n, H)

    def cat(self, a: State, b: State) -> State: ...  # rows of a, then rows of b

    def pick(self, state: State, index: list[int]) -> State: ...  # the rows at index


@dataclass(eq=False)
class Request:
    """n samples of one prime, with its options checked (generate/options.py)."""

    prime_ids: np.ndarray  # (P,), P ≥ 1, as Model.encode_prime gives
    cfg: SampleConfig  # cfg.length: tokens per row
    seed: int = 0
    n: int = 1
    stop: tuple[str, ...] = ()  # a row ends before the first of these (not sent)
    # Past its length, a row finishes a character it has begun (chat: the text the state goes
    # on from is whole); otherwise the unfinished character is left out.
    whole: bool = False
    rng: np.random.Generator | None = None  # the draws; None: seeded(seed)
    logprobs: int | None = None  # K: Token events with the top K too (logprobs.py); None: none
    # Only texts that match this pattern's automaton (constrain.py); a row ends when the model
    # chooses to end a match, or when no token can go on.
    constraint: Automaton | None = None
    cancelled: bool = field(default=False, init=False)  # its rows leave at the next advance
    live: int = field(default=0, init=False)  # rows still running
    reasons: list[str | None] = field(default_factory=list, init=False)  # each row's Done's

    def __post_init__(self) -> None:
        if self.rng is None:
            self.rng = seeded(self.seed)
        self.live = self.n
        self.reasons = [None] * self.n


# The events of a row (tuples: one is made per token, and a tuple is the cheapest to make).
class Text(NamedTuple):
    index: int  # the row (sample) within its request
    text: str


class Done(NamedTuple):
    index: int
    reason: str  # "stop": a stop text came; "length": its tokens were all made
    tokens: int  # tokens the row generated


class Failed(NamedTuple):
    message: str
    code: str  # "model_error" (NaN output); the server adds "shutting_down"


Event = Text | Done | Failed | Token


class _Row:
    """One sample: the prime it has still to read, its decoder, stop matcher and pending
    UTF-8 bytes."""

    __slots__ = ("req", "index", "decoder", "stops", "tokens", "reading", "pending", "piece",
                 "log", "state")  # fmt: skip

    def __init__(self, req: Request, index: int, decoder: StreamDecoder, reading: int) -> None:
        self.req, self.index, self.decoder, self.reading = req, index, decoder, reading
        self.stops = StopMatcher(req.stop) if req.stop else None
        self.tokens = 0
        self.pending = b""  # the bytes of a character begun (a byte-level vocabulary)
        self.piece = ""  # the text the decoder made of the last token
        self.log = TokenLog() if req.logprobs is not None else None
        auto = req.constraint  # the automaton's state, or None: no pattern
        self.state = auto.initial if auto is not None else None

    def push(self, token: int, table: Utf8Table | None) -> tuple[str, str | None]:
        """Take the row's next token: (text to send now, the finish reason or None)."""
        self.tokens += 1
        req = self.req
        if table is not None:
            self.pending = unfinished_char(self.pending + table.token_bytes[token])
        text = self.decoder.push(token)
        done = self.tokens >= req.cfg.length and not (req.whole and self.pending)
        if done:
            text += self.decoder.flush()
        self.piece = text
        if self.stops is None:
            return text, "length" if done else None
        text, stopped = self.stops.push(text)
        if stopped:
            return text, "stop"
        if done:
            return text + self.stops.flush(), "length"
        return text, None

    def follow(self, token: int, table: Utf8Table | None) -> tuple[str, str | None]:
        """push() for a row under a pattern: the end token, or a state that cannot go on,
        ends it ("stop")."""
        auto = self.req.constraint
        assert auto is not None and self.state is not None
        if token != auto.end:
            self.state = auto.next(self.state, token)
            text, reason = self.push(token, table)
            if reason is not None or auto.goes_on(self.state):
                return text, reason
        else:
            text = self.piece = ""  # the end: no text of its own
        text += self.decoder.flush()
        return text + (self.stops.flush() if self.stops is not None else ""), "stop"


class Rows:
    """B rows of one stepper, of one or many requests: the loop body (module docstring)."""

    def __init__(self, stepper: Stepper, tokenizer: AnyTokenizer) -> None:
        self.stepper, self.tokenizer = stepper, tokenizer
        self.table = tokenizer.utf8_rows(1).table if tokenizer.kind == "bpe" else None
        self.rows: list[_Row] = []
        self.logits: np.ndarray | None = None  # (B, V): each row's next-token scores
        self._one: Request | None = None  # the only request, when no row reads its prime
        self.scoring = False  # a row's request asked for logprobs
        # The tokens of the last advance that no step took, because every row finished then
        # (the stepper still stands before them): a conversation steps them itself.
        self.unstepped: np.ndarray | None = None

    @property
    def live(self) -> int:
        return len(self.rows)

    def join(
        self, req: Request, state: State | None = None, logits: np.ndarray | None = None
    ) -> None:
        """The request's n rows join: from `state` (L, 1, H) and `logits` (1, V) where its prime
        left them, or (None) from a zero state, to read the prime first, a token an advance."""
        if req.cfg.length == 0:
            req.live = 0
            return
        stepper, n = self.stepper, req.n
        reading = 0
        if state is None:
            state, reading = stepper.zero_state(1), len(req.prime_ids)
            logits = np.zeros((1, stepper.vocab_size), np.float32)
        assert logits is not None
        state, logits = stepper.repeat(state, n), np.repeat(logits, n, axis=0)
        if self.rows:
            assert self.logits is not None
            state = stepper.cat(stepper.state(), state)
            logits = np.concatenate([self.logits, logits])
        stepper.start(state)
        self._one = req if not self.rows and not reading else None
        self.scoring = self.scoring or req.logprobs is not None
        self.logits, self.unstepped = logits, None
        self.rows += [_Row(req, i, self.tokenizer.stream_decoder(), reading) for i in range(n)]

    def cancel(self, req: Request) -> None:
        """The request's rows leave at the next advance."""
        req.cancelled = True

    def clear(self) -> None:
        """Every row leaves now (the stepper keeps its state)."""
        self.rows, self.logits, self._one, self.scoring = [], None, None, False

    def advance(self) -> list[tuple[Request, Event]]:
        """One token for every row, then one step (module docstring)."""
        for row in self.rows:
            if row.req.cancelled:
                self._keep([i for i, row in enumerate(self.rows) if not row.req.cancelled])
                break
        events: list[tuple[Request, Event]] = []
        rows = self.rows
        if not rows:
            return events
        if self._one is not None:  # one request, every row writing: no grouping to do
            tokens, writing = self._choose_one(self._one, events), range(len(rows))
        else:
            tokens, writing = self._choose(events)
        scores = self._scores(tokens, writing) if self.scoring else {}
        done = []
        for i in writing:
            row = rows[i]
            if row.req.cancelled:  # its model output failed
                done.append(i)
                continue
            if row.state is None:
                text, reason = row.push(int(tokens[i]), self.table)
            else:
                text, reason = row.follow(int(tokens[i]), self.table)
            if row.log is not None and i in scores:
                token = Token(row.index, row.piece, *scores[i])
                events += [(row.req, t) for t in row.log.push(token, text, reason)]
            if text:
                events.append((row.req, Text(row.index, text)))
            if reason is not None:
                events.append((row.req, Done(row.index, reason, row.tokens)))
                row.req.reasons[row.index] = reason
                row.req.live -= 1
                done.append(i)
        if len(done) == len(rows):
            self.clear()
            self.unstepped = tokens
            return events
        if done:
            keep = sorted(set(range(len(rows))) - set(done))
            self._keep(keep)
            tokens = tokens[keep]
        self.logits = self.stepper.step(tokens)
        return events

    def _choose_one(self, req: Request, events: list) -> np.ndarray:
        """The tokens (B,) of rows that are all one request's, all writing."""
        rows = self.rows
        u = req.rng.random(req.n)  # type: ignore[union-attr]
        if len(rows) < req.n:  # some have finished: the others keep their own draws
            u = u[[row.index for row in rows]]
        try:
            return self._pick(rows, self.logits, req.cfg, u, req.constraint)  # type: ignore[arg-type]
        except ModelOutputError as e:
            self._failed([req], str(e), events)
            return np.zeros(len(rows), dtype=np.int64)

    def _choose(self, events: list) -> tuple[np.ndarray, list[int]]:
        """Every row's next input (B,): its next prime token, or the token it chooses (each
        request drawing n uniforms, rows with the same options chosen together); and the
        rows that chose."""
        rows, logits = self.rows, self.logits
        assert logits is not None
        tokens = np.zeros(len(rows), dtype=np.int64)
        writing = []
        draws: dict[Request, list[float]] = {}  # n uniforms per request per step
        u = [0.0] * len(rows)
        groups: dict[tuple[Any, ...], tuple[SampleConfig, list[int]]] = {}
        for i, row in enumerate(rows):
            req = row.req
            if row.reading:  # still taking in its prime: no draw, no choice
                tokens[i] = req.prime_ids[-row.reading]
                row.reading -= 1
                continue
            writing.append(i)
            drawn = draws.get(req)
            if drawn is None:
                drawn = draws[req] = req.rng.random(req.n).tolist()  # type: ignore[union-attr]
            u[i] = drawn[row.index]
            cfg = req.cfg
            key = (cfg.temperature, cfg.top_k, cfg.top_p, req.constraint)
            groups.setdefault(key, (cfg, []))[1].append(i)
        for (*_, auto), (cfg, idx) in groups.items():
            try:
                tokens[idx] = self._pick([rows[i] for i in idx], logits[idx], cfg,
                                         np.array([u[i] for i in idx]), auto)  # fmt: skip
            except ModelOutputError as e:
                self._failed([rows[i].req for i in idx], str(e), events)
        return tokens, writing

    def _scores(self, tokens: np.ndarray, writing: Any) -> dict[int, tuple[float, Any]]:
        """The chosen tokens' log-probabilities and top K of the writing rows that want them
        (logprobs.py), rows with the same options computed together."""
        rows, groups = self.rows, {}
        for i in writing:
            req = rows[i].req
            if rows[i].log is not None and not req.cancelled:
                cfg = req.cfg
                key = (cfg.temperature, cfg.top_k, cfg.top_p, req.constraint)
                groups.setdefault(key, []).append(i)
        out = {}
        for (*_, auto), idx in groups.items():
            cfg, k = rows[idx[0]].req.cfg, max(rows[i].req.logprobs or 0 for i in idx)
            logits, allowed = self.logits[idx], self._allowed([rows[i] for i in idx])  # type: ignore[index]
            piece = self.tokenizer.piece
            if auto is not None:  # the distribution _pick drew from: the end (token V) too
                logits, allowed = auto.choice_inputs(logits, [rows[i].state for i in idx], allowed)
                piece = functools.partial(_piece_or_end, piece, auto.end)
            found = token_scores(logits, cfg, allowed, tokens[idx], k, piece)
            for i, (lp, top) in zip(idx, found, strict=True):
                out[i] = (lp, top[: rows[i].req.logprobs])
        return out

    def _failed(self, reqs: list[Request], message: str, events: list) -> None:
        """The requests end with an error (the model's output is not numbers)."""
        for req in dict.fromkeys(reqs):
            if not req.cancelled:
                req.live, req.cancelled = 0, True
                events.append((req, Failed(message, "model_error")))

    def _pick(
        self, rows: list[_Row], logits: np.ndarray, cfg: SampleConfig, u: np.ndarray,
        auto: Automaton | None,
    ) -> np.ndarray:
        """choose() for rows of one group: within their UTF-8 masks, and their pattern's."""
        allowed = self._allowed(rows)
        if auto is not None:  # the end is token V, scored as constrain.py says
            logits, allowed = auto.choice_inputs(logits, [r.state for r in rows], allowed)
        return choose(logits, cfg, u, allowed)

    def _allowed(self, rows: list[_Row]) -> np.ndarray | None:
        """The rows' UTF-8 masks for choose, or None when nothing restricts them."""
        return None if self.table is None else utf8_masks(self.table, [r.pending for r in rows])

    def _keep(self, keep: list[int]) -> None:
        """Only the rows at `keep` stay (their state and logits with them)."""
        if not keep:
            self.clear()
            return
        assert self.logits is not None
        self.rows = [self.rows[i] for i in keep]
        self.scoring = any(row.log is not None for row in self.rows)
        self.stepper.start(self.stepper.pick(self.stepper.state(), keep))
        self.logits = self.logits[keep]


def _piece_or_end(piece: Callable[[int], str], end: int, token: int) -> str:
    """A token's text; the end of a pattern's match (token V) has none."""
    return "" if token == end else piece(token)


def texts(rows: Rows, tokens: bool = False) -> Iterator[tuple[int, Any]]:
    """(row, text) as the rows make it, and with `tokens` (row, Token) too (a request that asked
    for logprobs), until every row has finished; a model whose output is not numbers raises
    ModelOutputError."""
    while rows.live:
        for _, event in rows.advance():
            if isinstance(event, Text):
                yield event.index, event.text
            elif tokens and isinstance(event, Token):
                yield event.index, event
            elif isinstance(event, Failed):
                raise ModelOutputError(event.message)


def generate(
    stepper: Stepper, tokenizer: AnyTokenizer, req: Request, state: State | None = None
) -> Iterator[tuple[int, str]]:
    """(row, text) of the request's n samples as they come: the prime read from `state` (None:
    zeros), then the loop."""
    logits = stepper.prime(req.prime_ids, state)
    rows = Rows(stepper, tokenizer)
    rows.join(req, stepper.state(), logits)
    return texts(rows)
