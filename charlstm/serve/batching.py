"""Continuous batching: many generation jobs, one recurrent step per model for all their rows.
It knows nothing of HTTP (serve.py puts a web API in front of it).

    engine = Engine({"big": model}, max_batch=32, max_queue=256)
    engine.start(publish)          # publish([(job, [Text, Done, …]), …]) from the loop's thread
    engine.submit(Job("big", prompt_ids, cfg, seed=7, n=2, stop=("\\n\\n",)))   # any thread
    engine.cancel(job)             # its rows leave at the next step
    engine.close(grace=5)          # take no more; cut what still runs after 5 s (signal-safe)
    engine.stop()                  # cut everything now and end the thread

One thread, the decode loop, owns every model while the engine runs. Each iteration:

    queued jobs ──admitted while the model has free rows──▶ the model's batch: B rows (each
        job's n rows side by side, from a zero state), one Stepper
      (a prompt over READ_IN_BATCH tokens is first run apart, through the model's window
       forward at batch 1, ≤ PREFILL_TOKENS tokens an iteration, and joins with its state)
    per batch: a row still reading its prompt takes its next prompt token; every other row
        chooses a token (rows grouped by their options) → text → stop strings → rows that
        are done or whose client left drop out → one step of the rows left
    publish(the events gathered), every PUBLISH_EVERY seconds, and at once for a job's first
    text (time to first token) and its end

Publishing is what wakes the web layer, which shares the interpreter's lock with this thread:
at a few hundred steps a second, doing it every step would cost more than it gives.

A short prompt is read inside the batch, a token a step, because a step's cost hardly grows
with its rows: 32 requests arriving together start after their prompts' length in steps,
instead of queueing behind 32 separate passes (each ~3 ms at 2×512, or ~8 ms through
nn.LSTM, whose set-up dominates a short window).

A job's rows draw from its own generator, n uniforms per step for as long as any of its rows
runs, exactly as `charlstm sample -N n --seed S` draws: with the same seed and prompt, row i
gives sample i's text whoever else shares the batch. (The arithmetic differs from the
command's in its last bits: a short prompt runs on the step path rather than through the
window forward, and a step multiplies B rows rather than n. A draw would have to land within
that, ~1e-6, of a boundary between two tokens to change a choice, as choice.py explains.)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from charlstm.api import Model
from charlstm.config import SampleConfig
from charlstm.data.tokenizer import StreamDecoder
from charlstm.errors import CharlstmError
from charlstm.generate.choose import ModelOutputError, Utf8Rows, choose, seeded
from charlstm.generate.torch_engine import Stepper

# Prompts of up to this many tokens are read inside the batch, a token a step; a longer one
# would hold its first token back too many steps, and is run apart (window forward) first.
READ_IN_BATCH = 16
# Prompt tokens run apart per iteration: a long prompt joins over several iterations instead
# of holding up the rows already running.
PREFILL_TOKENS = 256
_LOGITS_PER_CHUNK = 1 << 22  # a prefill window's logits (T, V) stay near 4M numbers
_IDLE_WAIT = 0.05  # seconds the idle loop sleeps between looks at close()'s flags
PUBLISH_EVERY = 0.02  # seconds between two publications of text (as `charlstm sample` writes)


class QueueFull(CharlstmError):
    """No room in the queue: the caller should come back later."""


class ShuttingDown(CharlstmError):
    """The engine takes no more jobs."""


@dataclass(frozen=True)
class Text:
    index: int  # the row (choice) within its job
    text: str


@dataclass(frozen=True)
class Done:
    index: int
    reason: str  # "stop": a stop string came; "length": max tokens reached
    tokens: int  # tokens the row generated


@dataclass(frozen=True)
class Failed:
    message: str
    code: str  # "shutting_down" (cut by close/stop) or "model_error" (NaN output, a bug)


Event = Text | Done | Failed
Publish = Callable[[list[tuple["Job", list[Event]]]], None]


@dataclass(eq=False)
class Job:
    """n samples of one prompt: what a completion request asks of the engine."""

    model: str  # a name the engine serves
    prompt_ids: np.ndarray  # (P,), P ≥ 1, as Model.encode_prime gives
    cfg: SampleConfig  # cfg.length: tokens per row
    seed: int
    n: int = 1
    stop: tuple[str, ...] = ()  # a row ends when its text holds one; the string is not sent
    handle: object = None  # the caller's own, untouched (serve.py: where events go)
    cancelled: bool = field(default=False, init=False)  # set by Engine.cancel (any thread)
    rng: np.random.Generator = field(init=False, repr=False)
    live: int = field(init=False)  # rows still running
    started: bool = field(default=False, init=False)  # its first text has been sent

    def __post_init__(self) -> None:
        self.rng = seeded(self.seed)
        self.live = self.n


class _Row:
    """One sample of a job: the prompt it has still to read, its stream decoder and the text
    not yet sent."""

    __slots__ = ("job", "index", "decoder", "tokens", "held", "reading", "utf8")

    def __init__(self, job: Job, index: int, decoder: StreamDecoder, reading: int,
                 utf8: Utf8Rows | None) -> None:  # fmt: skip
        self.job, self.index, self.decoder = job, index, decoder
        self.utf8 = utf8  # a byte-level vocabulary: which tokens keep the text valid UTF-8
        self.reading = reading  # prompt tokens still to take in (the last ones of the prompt)
        self.tokens = 0
        self.held = ""  # text that might begin a stop string: sent once it cannot

    def push(self, token: int) -> tuple[str, str | None]:
        """Take the row's next token: (text to send now, the finish reason or None)."""
        self.tokens += 1
        job = self.job
        if self.utf8 is not None:
            self.utf8.push(np.array([token]))
        text = self.decoder.push(token)
        done = self.tokens >= job.cfg.length
        if done:
            text += self.decoder.flush()
        if not job.stop:
            return text, "length" if done else None
        text = self.held + text
        cut = min((i for i in (text.find(s) for s in job.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.held = ""
            return text[:cut], "stop"
        if done:
            self.held = ""
            return text, "length"
        keep = _stop_prefix_start(text, job.stop)
        self.held = text[keep:]
        return text[:keep], None


def _allowed(rows: list[_Row]) -> np.ndarray | None:
    """The rows' UTF-8 masks stacked (B, V) for choose, or None when no row restricts."""
    masks = [None if row.utf8 is None else row.utf8.allowed() for row in rows]
    if all(m is None for m in masks):
        return None
    vocab = next(m for m in masks if m is not None).shape[1]
    return np.concatenate([np.ones((1, vocab), bool) if m is None else m for m in masks])


def _stop_prefix_start(text: str, stops: tuple[str, ...]) -> int:
    """Where the longest suffix of `text` that begins some stop string starts (len: none)."""
    start = len(text)
    for s in stops:
        i = text.find(s[0], max(0, len(text) - len(s) + 1))
        while 0 <= i < start:
            if s.startswith(text[i:]):
                start = i
                break
            i = text.find(s[0], i + 1)
    return start


@dataclass(eq=False)
class _Prefill:
    job: Job
    done: int = 0  # prompt tokens run so far
    state: tuple[torch.Tensor, ...] | None = None  # (L, 1, H) each
    logits: np.ndarray | None = None  # (1, V): the last prompt token's predictions


@dataclass(eq=False)
class _Batch:
    """The rows of one model, stepped together."""

    model: Model
    stepper: Stepper
    rows: list[_Row] = field(default_factory=list)
    logits: np.ndarray | None = None  # (B, V): each row's next-token scores (rows that read)
    waiting: int = 0  # rows admitted and still in a prefill apart

    def __post_init__(self) -> None:
        self.device = self.model.device  # (asking the model costs a little every step)


class Engine:
    """Runs generation jobs for one or more models in one decode thread (module docstring)."""

    def __init__(
        self,
        models: Mapping[str, Model],
        *,
        max_batch: int = 32,
        max_queue: int = 256,
        publish_every: float = PUBLISH_EVERY,
    ) -> None:
        self.models = dict(models)
        self.publish_every = publish_every
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._lock = threading.Lock()  # guards _queue and the admission of jobs
        self._wake = threading.Event()
        self._queue: deque[Job] = deque()
        self._prefill: deque[_Prefill] = deque()
        self._batches = {name: _Batch(model, Stepper(model.net.eval()))
                         for name, model in self.models.items()}  # fmt: skip
        self._events: dict[Job, list[Event]] = {}
        self._urgent = False  # a first text or an end among the events: publish them now
        self._published = 0.0  # when events were last published (time.monotonic)
        self._publish: Publish = lambda updates: None
        self._thread: threading.Thread | None = None
        # Set by close()/stop(), possibly from a signal handler: plain assignments only.
        self._closing = False
        self._cut_at: float | None = None
        self._exit = False
        self.steps = 0  # batched steps taken, all models together
        self.errors: list[BaseException] = []  # unexpected failures of the loop (bugs)

    # ----------------------------------------------------------------------- any thread

    def start(self, publish: Publish) -> None:
        """Start the decode loop; `publish` receives the events in that thread."""
        self._publish = publish
        self._thread = threading.Thread(target=self._run, name="charlstm-decode", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Take a job: it starts at the next iteration if its rows fit in its model's batch,
        else it waits in the queue; raises QueueFull when `max_queue` jobs already wait, and
        ShuttingDown after close()."""
        if job.model not in self.models:
            raise CharlstmError(f"no model named {job.model!r}")
        if not 1 <= job.n <= self.max_batch:
            raise CharlstmError(f"n must be between 1 and {self.max_batch}, got {job.n}")
        batch = self._batches[job.model]
        with self._lock:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            # Rows taken (read from the decode thread's counts: at worst a job waits a turn).
            taken = len(batch.rows) + batch.waiting + job.n
            taken += sum(queued.n for queued in self._queue if queued.model == job.model)
            if taken > self.max_batch and len(self._queue) >= self.max_queue:
                raise QueueFull(f"the queue is full ({len(self._queue)} requests waiting)")
            self._queue.append(job)
        self._wake.set()

    def cancel(self, job: Job) -> None:
        """The job's rows leave at the next step (its client went away); nothing more is
        published for it."""
        job.cancelled = True
        self._wake.set()

    def close(self, grace: float = 0.0) -> None:
        """Take no more jobs, fail the queued ones, and cut the running ones that have not
        finished `grace` seconds from now. Safe to call from a signal handler (no locks)."""
        self._closing = True
        cut = time.monotonic() + grace
        if self._cut_at is None or cut < self._cut_at:
            self._cut_at = cut

    def stop(self, timeout: float = 10.0) -> None:
        """Cut every job now and wait for the decode loop to end."""
        self.close(0.0)
        self._exit = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def closing(self) -> bool:
        return self._closing

    def stats(self) -> dict[str, int]:
        """Rows in the batches, rows in a prefill apart, jobs queued, steps taken (read
        without a lock)."""
        batches = list(self._batches.values())
        return {
            "rows": sum(len(b.rows) for b in batches),
            "prefilling": sum(b.waiting for b in batches),
            "queued": len(self._queue),
            "steps": self.steps,
        }

    # ----------------------------------------------------------------------- the decode loop

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                try:
                    busy = self._iteration()
                except Exception as e:  # a bug: fail what runs, keep serving, keep the error
                    self.errors.append(e)
                    self._fail_all(f"internal error: {type(e).__name__}: {e}", "model_error")
                    busy = False
                due = self._published + self.publish_every
                if self._urgent or not busy or time.monotonic() >= due:
                    self._flush()
                if not busy:
                    if self._exit and not self._queue:
                        return
                    self._wake.wait(_IDLE_WAIT)
                    self._wake.clear()

    def _iteration(self) -> bool:
        """One turn of the loop; False when there was nothing to do."""
        if self._closing:
            with self._lock:
                queued = list(self._queue)
                self._queue.clear()
            for job in queued:
                self._fail(job, "the server is shutting down", "shutting_down")
            if self._cut_at is not None and time.monotonic() >= self._cut_at:
                self._fail_all("the server is shutting down; the stream was cut", "shutting_down")
        self._admit()
        busy = self._run_prefill()
        for batch in self._batches.values():
            if batch.rows:
                self._advance(batch)
                busy = True
        return busy

    def _admit(self) -> None:
        """Queued jobs join their batch (a long prompt: its prefill first), in order, while
        their model has rows free (a job that does not fit holds back its model's later jobs)."""
        with self._lock:
            full: set[str] = set()
            kept: deque[Job] = deque()
            for job in self._queue:
                batch = self._batches[job.model]
                if job.cancelled:
                    continue
                if job.model in full or len(batch.rows) + batch.waiting + job.n > self.max_batch:
                    full.add(job.model)
                    kept.append(job)
                    continue
                if len(job.prompt_ids) <= READ_IN_BATCH:
                    self._join(batch, job)
                else:
                    batch.waiting += job.n
                    self._prefill.append(_Prefill(job))
            self._queue = kept

    def _run_prefill(self) -> bool:
        """Run up to PREFILL_TOKENS tokens of the long prompts waiting, in order, at batch 1,
        through the model's window forward; a job whose prompt is done joins its batch."""
        budget, ran = PREFILL_TOKENS, False
        while self._prefill and budget > 0:
            pre = self._prefill[0]
            job, batch = pre.job, self._batches[pre.job.model]
            if job.cancelled:
                self._prefill.popleft()
                batch.waiting -= job.n
                continue
            net, ids = batch.model.net, job.prompt_ids
            chunk = max(1, min(budget, _LOGITS_PER_CHUNK // net.cfg.vocab_size))
            x = torch.from_numpy(ids[pre.done : pre.done + chunk]).long().view(1, -1)
            logits, pre.state = net(x.to(batch.device), pre.state)  # (1, T, V)
            pre.done += x.shape[1]
            budget -= x.shape[1]
            ran = True
            if pre.done == len(ids):
                self._prefill.popleft()
                batch.waiting -= job.n
                self._join(batch, job, pre.state, logits[:, -1].float().cpu().numpy())
        return ran

    def _join(
        self,
        batch: _Batch,
        job: Job,
        state: tuple[torch.Tensor, ...] | None = None,
        logits: np.ndarray | None = None,
    ) -> None:
        """A job's n rows join the model's batch: with n copies of the state and logits its
        prompt left (L, 1, H) and (1, V), or from a zero state to read the prompt first."""
        stepper, n = batch.stepper, job.n
        if state is None:
            state, logits, reading = stepper.zero_state(n), None, len(job.prompt_ids)
        else:
            state, reading = tuple(s.expand(-1, n, -1) for s in state), 0
        vocab = batch.model.net.cfg.vocab_size
        logits = np.zeros((n, vocab), np.float32) if logits is None else logits.repeat(n, 0)
        if batch.rows:
            running = stepper.state()
            state = tuple(torch.cat([a, b], dim=1) for a, b in zip(running, state, strict=True))
            batch.logits = np.concatenate([batch.logits, logits])
        else:
            batch.logits = logits
        stepper.start(state)
        tok = batch.model.tokenizer
        batch.rows.extend(_Row(job, i, tok.stream_decoder(), reading, batch.model.utf8_rows(1))
                          for i in range(n))  # fmt: skip

    def _advance(self, batch: _Batch) -> None:
        """Every row's next input: its next prompt token, or a token chosen from its logits
        (then sent as text, and finished rows let go); then one step of the rows left."""
        if any(row.job.cancelled for row in batch.rows):
            self._keep(batch, [i for i, row in enumerate(batch.rows) if not row.job.cancelled])
            if not batch.rows:
                return
        rows, logits = batch.rows, batch.logits
        assert logits is not None
        tokens = np.zeros(len(rows), dtype=np.int64)
        writing = []  # the rows that choose a token this step
        # Each job draws n uniforms per step from its own generator, as `sample -N n` does.
        draws: dict[Job, np.ndarray] = {}
        u = np.empty(len(rows))
        # Rows with the same options are chosen together (choose() is row by row anyway).
        groups: dict[tuple[float, int, float], tuple[SampleConfig, list[int]]] = {}
        for i, row in enumerate(rows):
            job = row.job
            if row.reading:  # still taking in its prompt: no draw, no choice
                tokens[i] = job.prompt_ids[-row.reading]
                row.reading -= 1
                continue
            writing.append(i)
            if job not in draws:
                draws[job] = job.rng.random(job.n)
            u[i] = draws[job][row.index]
            cfg = job.cfg
            groups.setdefault((cfg.temperature, cfg.top_k, cfg.top_p), (cfg, []))[1].append(i)
        failed: set[Job] = set()
        message = ""
        for cfg, idx in groups.values():
            try:
                tokens[idx] = choose(logits[idx], cfg, u[idx], _allowed([rows[i] for i in idx]))
            except ModelOutputError as e:
                failed.update(rows[i].job for i in idx)
                message = str(e)
        for job in failed:
            self._fail(job, message, "model_error")
        done = set()
        for i in writing:
            row = rows[i]
            job = row.job
            if job in failed:
                done.add(i)
                continue
            text, reason = row.push(int(tokens[i]))
            events = self._events.setdefault(job, [])
            if text:
                events.append(Text(row.index, text))
                if not job.started:
                    job.started = self._urgent = True
            if reason is not None:
                events.append(Done(row.index, reason, row.tokens))
                job.live -= 1
                self._urgent = True
                done.add(i)
        if done:
            keep = [i for i in range(len(rows)) if i not in done]
            self._keep(batch, keep)
            tokens = tokens[keep]
        if batch.rows:
            step = batch.stepper.step(torch.from_numpy(tokens).to(batch.device))
            # A view of the stepper's buffer (on a CPU): read before the next step writes it.
            batch.logits = step.float().cpu().numpy()
            self.steps += 1

    def _keep(self, batch: _Batch, keep: list[int]) -> None:
        """Only the rows at `keep` stay in the batch (their state and logits with them)."""
        batch.rows = [batch.rows[i] for i in keep]
        if not keep:
            batch.logits = None
            return
        assert batch.logits is not None
        index = torch.tensor(keep)
        state = batch.stepper.state()
        batch.stepper.start(tuple(s[:, index.to(s.device)] for s in state))
        batch.logits = batch.logits[keep]

    def _fail(self, job: Job, message: str, code: str) -> None:
        """End a job with an error; any rows it still has leave at the next step."""
        job.live = 0
        job.cancelled = True
        self._events.setdefault(job, []).append(Failed(message, code))
        self._urgent = True

    def _fail_all(self, message: str, code: str) -> None:
        """End every job in prefill or in a batch with an error (shutdown, or a bug)."""
        jobs = {pre.job for pre in self._prefill}
        self._prefill.clear()
        for batch in self._batches.values():
            jobs.update(row.job for row in batch.rows)
            batch.rows, batch.logits, batch.waiting = [], None, 0
        for job in jobs:
            if not job.cancelled:
                self._fail(job, message, code)

    def _flush(self) -> None:
        """Publish the events gathered."""
        updates = [(job, events) for job, events in self._events.items() if events]
        self._events, self._urgent = {}, False
        self._published = time.monotonic()
        if updates:
            self._publish(updates)
