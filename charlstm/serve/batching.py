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
        job's n rows side by side, from a zero state), one generate/loop.Rows
      (a prompt over READ_IN_BATCH tokens is first run apart, through the model's window
       forward at batch 1, ≤ PREFILL_TOKENS tokens an iteration, and joins with its state)
    per batch: Rows.advance, the loop every door runs: a row still reading its prompt takes
        its next prompt token; every other row chooses a token (rows grouped by their
        options) → text → stop strings → rows that are done or whose client left drop out
        → one step of the rows left
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
that, ~1e-6, of a boundary between two tokens to change a choice, as choose.py explains.)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from charlstm.api import Model
from charlstm.config import SampleConfig
from charlstm.errors import CharlstmError
from charlstm.generate.constrain import Automaton
from charlstm.generate.loop import Done, Event, Failed, Request, Rows, Text
from charlstm.generate.torch_engine import TorchStepper

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


Publish = Callable[[list[tuple["Job", list[Event]]]], None]


class Job(Request):
    """n samples of one prompt for one of the engine's models: what a completion request
    asks of the engine (a generate/loop.Request, its prime the prompt)."""

    def __init__(
        self,
        model: str,  # a name the engine serves
        prompt_ids: np.ndarray,  # (P,), P ≥ 1, as Model.encode_prime gives
        cfg: SampleConfig,  # cfg.length: tokens per row
        seed: int,
        n: int = 1,
        stop: tuple[str, ...] = (),  # a row ends when its text holds one; the text is not sent
        handle: object = None,  # the caller's own, untouched (serve.py: where events go)
        logprobs: int | None = None,  # Token events, with the top K (generate/logprobs.py)
        constraint: Automaton | None = None,  # only text that matches (generate/constrain.py)
    ) -> None:
        super().__init__(prompt_ids, cfg, seed, n, tuple(stop), logprobs=logprobs,
                         constraint=constraint)  # fmt: skip
        self.model, self.handle = model, handle
        self.first = 0  # its first row's number among its request's choices (serve/replies.py)
        self.started = False  # its first text has been sent

    @property
    def prompt_ids(self) -> np.ndarray:
        return self.prime_ids


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
    rows: Rows
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
        self._batches = {
            name: _Batch(model, Rows(TorchStepper(model.net), model.tokenizer))
            for name, model in self.models.items()
        }
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
            taken = batch.rows.live + batch.waiting + job.n
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
            "rows": sum(b.rows.live for b in batches),
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
            if batch.rows.live:
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
                if job.model in full or batch.rows.live + batch.waiting + job.n > self.max_batch:
                    full.add(job.model)
                    kept.append(job)
                    continue
                if len(job.prompt_ids) <= READ_IN_BATCH:
                    batch.rows.join(job)
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
                batch.rows.join(job, pre.state, logits[:, -1].float().cpu().numpy())
        return ran

    def _advance(self, batch: _Batch) -> None:
        """One advance of the model's rows (generate/loop.Rows: choose, text, stop texts,
        finished rows let go, one step); their events gathered for publishing."""
        for job, event in batch.rows.advance():
            assert isinstance(job, Job)
            self._events.setdefault(job, []).append(event)
            if isinstance(event, Text) and not job.started:
                job.started = self._urgent = True
            elif not isinstance(event, Text):  # an end: a Done, or a Failed (NaN output)
                self._urgent = True
        if batch.rows.live:
            self.steps += 1

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
            jobs.update(row.req for row in batch.rows.rows)  # type: ignore[misc]
            batch.rows.clear()
            batch.waiting = 0
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


__all__ = ["Done", "Engine", "Event", "Failed", "Job", "QueueFull", "ShuttingDown", "Text"]
