"""`charlstm serve`: trained models behind an OpenAI-style HTTP API, every request one or more
rows of a batched recurrent step (batching.py). Needs the `[serve]` extra (Starlette, uvicorn
with httptools and uvloop, pydantic).

    POST /v1/completions   {"model", "prompt" (a text or a list), "max_tokens", "temperature",
                            "top_p", "top_k", "seed", "n", "stop", "stream", "on_unknown",
                            "logprobs", "echo"} → OpenAI's completion object, or with "stream":
                           true server-sent events ending `[DONE]` (replies.py)
    POST /v1/chat/completions  {"messages", the same options, "logprobs", "top_logprobs"} →
                           a chat completion (or its chunks): the messages written as the
                           model's own transcript (chat.py, `--chat-template`)
    GET  /v1/models        the models served, by name
    GET  /health           {"status", "models", "rows", "prefilling", "queued", "steps"}
    POST /score            {"model", "text"} → bits per character of each line (evaluate
                           --per-line)

    models = load_models(["checkpoints/big"])        # {"big": Model}
    run(models, ServeConfig(port=8000), report)      # until SIGINT/SIGTERM; then exit cleanly

The event loop (uvicorn) parses, checks and answers; it never runs the model. Jobs go to the
engine's decode thread, whose events come back every 20 ms (at once for a first token or an
end) through call_soon_threadsafe into each request's queue; a stream sends whatever has
gathered since its last write, so a busy server writes fewer, longer chunks. A watch on each
request's connection cancels its job the moment the client goes away, and its rows leave the
batch at the next step.

Every failure is a JSON body {"error": {"message", "type", "code", "param"}} as OpenAI's:
400 a bad request (body, types, ranges, a prompt the model cannot read), 401 no or a wrong API
key, 403 a Host that does not name this server or an Origin not allowed (--allow-host,
--allow-origin), 404 an unknown model or path, 408 a request line, headers or body that did not
arrive in time, 413 a body over MAX_BODY, 415 a body that is not `application/json`, 431 a
request line and headers over MAX_HEAD, 503 + Retry-After when the queue is full or the server
is stopping. Nothing a request says is ever used as a path.

Before a request reaches the app, the connection (transport.py) must deliver its request line and
headers within ServeConfig.head_timeout seconds and MAX_HEAD bytes, and its body within
body_timeout: a slow or endless client is cut off, holding little memory meanwhile. A client
that leaves mid-body is one log line (499), not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive

from charlstm.api import EncodedText, Model, load, random_seed
from charlstm.config import CHECKPOINTS, SampleConfig, ServeConfig
from charlstm.data.items import SEPARATORS
from charlstm.errors import OptionError, UsageError
from charlstm.evaluation.exact import predictions
from charlstm.formats.run_folder import RunFolder
from charlstm.generate.options import Caps, check_sampling, constraint
from charlstm.serve.batching import Done, Engine, Event, Failed, Job, QueueFull, ShuttingDown
from charlstm.serve.chat import templates
from charlstm.serve.guard import AccessLog, Guard
from charlstm.serve.replies import Channel, Echo, Reply, failure
from charlstm.serve.requests import (
    MAX_PROMPT_TOKENS,
    MAX_SCORE_TOKENS,
    MAX_STOP_CHARS,
    MAX_STOPS,
    ApiError,
    ChatRequest,
    CompletionRequest,
    Gone,
    Report,
    ScoreRequest,
    bad,
    parse_body,
    steering,
)
from charlstm.serve.transport import StoppingUvicorn, listen, uvicorn_config

_NAMES = {"length": "max_tokens", "temp": "temperature"}  # generate/options.py's -> ours


def _ignore(event: str, data: dict[str, Any]) -> None:
    pass


# ----------------------------------------------------------------------------------- the app


class _Server:
    """The endpoints, over one engine and the loaded models."""

    def __init__(self, models: Mapping[str, Model], cfg: ServeConfig, report: Report) -> None:
        self.models = dict(models)
        self.cfg = cfg
        self.report = report
        self.engine = Engine(self.models, max_batch=cfg.max_batch, max_queue=cfg.queue)
        self.created = int(time.time())
        self.scoring = 0  # /score requests running or waiting
        self.score_lock = asyncio.Lock()  # one at a time: each may take seconds of CPU
        self.templates = templates(cfg.chat_template, list(self.models))  # chat.py

    # ------------------------------------------------------------------- small endpoints

    async def health(self, request: Request) -> Response:
        stats = self.engine.stats()
        status = "stopping" if self.engine.closing else "ok"
        return JSONResponse({"status": status, "models": list(self.models), **stats})

    async def list_models(self, request: Request) -> Response:
        data = [{"id": name, "object": "model", "created": self.created, "owned_by": "charlstm"}
                for name in self.models]  # fmt: skip
        return JSONResponse({"object": "list", "data": data})

    def _model(self, name: str | None) -> tuple[str, Model]:
        if name is None:
            if len(self.models) == 1:
                return next(iter(self.models.items()))
            raise bad(f"model is required: one of {', '.join(self.models)}", "model")
        if name not in self.models:
            served = ", ".join(self.models)
            raise ApiError(404, f"no model named {name!r}; this server has {served}",
                           code="model_not_found", param="model")  # fmt: skip
        return name, self.models[name]

    # ------------------------------------------------------------------- completions

    def _job(self, name: str, model: Model, req: CompletionRequest | ChatRequest, prompt: str,
             logprobs: int | None, ends: tuple[str, ...] = ()) -> tuple[Job, int]:  # fmt: skip
        """One prompt of the request as an engine job, every option checked against this
        server's limits (`ends`: stop texts of the server's own), and its length in tokens."""
        cfg = self.cfg
        caps = Caps(cfg.max_tokens, min(SampleConfig.length, cfg.max_tokens), MAX_STOPS,
                    MAX_STOP_CHARS)  # fmt: skip
        try:  # the sampling options, checked as the CLI's and the API's are
            names, steer = steering(req, _NAMES)
            given = check_sampling(length=req.max_tokens, temp=req.temperature, top_k=req.top_k,
                                   top_p=req.top_p, seed=req.seed, stop=req.stop, caps=caps,
                                   logprobs=logprobs, names=names, **steer)  # fmt: skip
            auto = constraint(given, model.tokenizer, names)  # kept per pattern once compiled
        except OptionError as e:
            raise bad(str(e), getattr(e, "option", None)) from e  # a config's range: no option
        n = req.n or 1
        if n > cfg.max_batch:
            raise bad(f"n must be at most {cfg.max_batch}, got {n}", "n")
        sample, stop = given.cfg, given.stop + ends
        tok = model.tokenizer
        unknown = tok.unknown(prompt) if req.on_unknown != "skip" else []
        if unknown:
            what = "words" if tok.kind == "word" else "characters"
            shown = " ".join(unknown[:10]) if tok.kind == "word" else "".join(unknown[:20])
            raise bad(f"the prompt has {what} the model never saw: {shown!r}; remove them or "
                       'send "on_unknown": "skip"', "prompt")  # fmt: skip
        ids = model.encode_prime(prompt, "skip")
        if len(ids) > MAX_PROMPT_TOKENS:
            raise bad(f"the prompt is {len(ids):,} tokens; at most {MAX_PROMPT_TOKENS:,}",
                       "prompt")  # fmt: skip
        seed = random_seed() if req.seed is None else req.seed
        if not prompt and model.item_kind:  # an item model: n items, each to its separator
            stop = (*stop, SEPARATORS[model.item_kind])
        job = Job(name, ids, sample, seed, n=n, stop=stop, handle=None, logprobs=given.logprobs,
                  constraint=auto)  # fmt: skip
        return job, len(ids) if prompt else 0  # no prompt: the newline it starts from is ours

    async def completions(self, request: Request) -> Any:
        t0 = time.perf_counter()
        req = await parse_body(request, CompletionRequest, self.cfg.body_timeout)
        name, model = self._model(req.model)
        prompts = req.prompt if isinstance(req.prompt, list) else [req.prompt or ""]
        if not prompts:
            raise bad("prompt must be a text or a list of at least one text", "prompt")
        if req.max_tokens == 0 and not req.echo:
            raise bad("max_tokens 0 generates nothing: it is for echo (the prompt and, with "
                      "logprobs, its tokens' log-probabilities)", "max_tokens")  # fmt: skip
        jobs = [self._job(name, model, req, prompt, req.logprobs) for prompt in prompts]
        echo = None
        if req.echo:
            echo = [await self._echo(model, prompt, job, req.logprobs)
                    for prompt, (job, _) in zip(prompts, jobs, strict=True)]  # fmt: skip
        return await self._answer(request, t0, name, jobs, bool(req.stream), echo=echo)

    async def chat(self, request: Request) -> Any:
        t0 = time.perf_counter()
        req = await parse_body(request, ChatRequest, self.cfg.body_timeout)
        name, model = self._model(req.model)
        if req.max_completion_tokens is not None:
            req.max_tokens = req.max_completion_tokens
        if req.max_tokens == 0:
            raise bad("max_tokens must be at least 1", "max_tokens")
        if req.top_logprobs is not None and not req.logprobs:
            raise bad("top_logprobs needs logprobs: true", "top_logprobs")
        req.on_unknown = req.on_unknown or "skip"  # a chat client sends what its user typed
        prompt, ends = self.templates[name].render(req.messages)
        job = self._job(name, model, req, prompt, (req.top_logprobs or 0) if req.logprobs
                        else None, ends)  # fmt: skip
        return await self._answer(request, t0, name, [job], bool(req.stream), chat=True)

    async def _echo(self, model: Model, prompt: str, job: Job, logprobs: int | None) -> Echo:
        """What echo puts before a choice: the prompt, and with logprobs its tokens' (one pass
        over it from a zero state, as evaluate --per-token: the first token's is null)."""
        if logprobs is None or not prompt:
            return Echo(prompt, [] if logprobs is not None else None)
        read = EncodedText(prompt, job.prompt_ids, [], 0, 0)
        async with self.score_lock:  # beside the decode loop, in a worker thread, as /score
            tokens = await asyncio.to_thread(model.token_logprobs, read, top=logprobs)
        return Echo("".join(t.text for t in tokens), tokens)

    async def _answer(self, request: Request, t0: float, name: str, jobs: list[tuple[Job, int]],
                      stream: bool, *, chat: bool = False,
                      echo: list[Echo] | None = None) -> Any:  # fmt: skip
        """Run the jobs (one per prompt; their choices numbered in order) and answer."""
        n = sum(job.n for job, _ in jobs)
        if n > self.cfg.max_batch:
            raise bad(f"n × prompts must be at most {self.cfg.max_batch}, got {n}", "n")
        channel = Channel()
        for i, (job, _) in enumerate(jobs):
            job.handle, job.first = channel, i * job.n
        request.state.model = name
        reply: Reply | None = Reply(self, [job for job, _ in jobs], name,
                                    sum(tokens for _, tokens in jobs), request.state, chat=chat,
                                    echo=echo)  # fmt: skip
        first: list[Event] | None = [Done(i, "length", 0) for i in range(n)]  # max_tokens 0
        try:
            if jobs[0][0].cfg.length:
                self._submit([job for job, _ in jobs])
                channel.watch = asyncio.create_task(self._watch(request.receive, jobs))
                first = await channel.get()  # the first tokens: what a status can still say
            request.state.first = time.perf_counter() - t0
            if first is None:
                return reply.gone()
            failed = next((e for e in first if isinstance(e, Failed)), None)
            if failed is not None:
                raise failure(failed)
            if stream:
                answer, reply = reply.stream(first), None  # the stream finishes the job
                return answer
            return await reply.collect(first)
        finally:
            if reply is not None:
                reply.close()

    def _submit(self, jobs: list[Job]) -> None:
        """Every job to the engine, or (the queue full, the server stopping) none."""
        try:
            for job in jobs:
                self.engine.submit(job)
        except QueueFull as e:
            raise ApiError(503, f"{e}; try again shortly", "server_error", "queue_full",
                           headers={"Retry-After": "1"}) from e  # fmt: skip
        except ShuttingDown as e:
            raise ApiError(503, str(e), "server_error", "shutting_down") from e

    async def _watch(self, receive: Receive, jobs: list[tuple[Job, int]]) -> None:
        """Cancel the jobs when their client disconnects."""
        while (await receive())["type"] != "http.disconnect":
            pass
        for job, _ in jobs:
            self.engine.cancel(job)
        jobs[0][0].handle.queue.put_nowait(None)

    def deliver(self, updates: list[tuple[Job, list[Event]]]) -> None:
        """Events from the decode loop, on the event loop: into each request's channel."""
        for job, events in updates:
            job.handle.put(job, events)

    # ------------------------------------------------------------------- scoring

    async def score(self, request: Request) -> Response:
        req = await parse_body(request, ScoreRequest, self.cfg.body_timeout)
        name, model = self._model(req.model)
        request.state.model = name
        encoded = model.encode_text(req.text)
        tokens = predictions(len(encoded.ids))  # what is scored: as evaluate's "tokens"
        if tokens > MAX_SCORE_TOKENS:
            raise bad(f"the text is {tokens:,} tokens; at most {MAX_SCORE_TOKENS:,} per "
                       "request", "text")  # fmt: skip
        if len(encoded.ids) < 2:
            raise bad("the text is too short to score: it needs at least 2 tokens the model "
                       "knows", "text")  # fmt: skip
        if self.scoring >= max(1, self.cfg.queue):
            raise ApiError(503, "too many texts waiting to be scored; try again shortly",
                           "server_error", "queue_full", headers={"Retry-After": "1"})  # fmt: skip
        self.scoring += 1
        try:
            async with self.score_lock:  # beside the decode loop, in a worker thread
                if self.engine.closing:
                    raise ApiError(503, "the server is shutting down", "server_error",
                                   "shutting_down")  # fmt: skip
                lines = await asyncio.to_thread(model.score_lines, encoded)
        finally:
            self.scoring -= 1
        request.state.tokens = tokens
        return JSONResponse({"object": "score", "model": name, "lines": lines,
                             "tokens": tokens, "skipped_chars": encoded.skipped_chars,
                             "unknown_words": encoded.unknown_words})  # fmt: skip


# ----------------------------------------------------------------------------------- assembly


def create_app(
    models: Mapping[str, Model], cfg: ServeConfig | None = None, report: Report | None = None
) -> Starlette:
    """The ASGI app serving `models` (name → Model); its engine runs with the app's lifespan
    (app.state.engine)."""
    if not models:
        raise UsageError("serve needs at least one model")
    cfg = cfg or ServeConfig()
    report = report or _ignore
    server = _Server(models, cfg, report)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        loop = asyncio.get_running_loop()

        def publish(updates: list[tuple[Job, list[Event]]]) -> None:  # the decode thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody listens
                loop.call_soon_threadsafe(server.deliver, updates)

        server.engine.start(publish)
        try:
            yield
        finally:
            await asyncio.to_thread(server.engine.stop)

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return ApiError(exc.status_code, str(exc.detail), code=code,
                        headers=exc.headers).response()  # fmt: skip

    async def gone(request: Request, exc: Exception) -> Response:
        request.state.gone = True
        return Response(status_code=499)  # nobody reads it

    async def bug(request: Request, exc: Exception) -> Response:
        report("error", {"message": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc()})  # fmt: skip
        return ApiError(500, "internal error", "server_error", "internal_error").response()

    routes = [
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/v1/chat/completions", server.chat, methods=["POST"]),
        Route("/v1/models", server.list_models, methods=["GET"]),
        Route("/health", server.health, methods=["GET"]),
        Route("/score", server.score, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(AccessLog, report=report), Middleware(Guard, cfg=cfg)],
        exception_handlers={ApiError: api_error, HTTPException: http_error, Gone: gone,
                            Exception: bug},  # fmt: skip
        lifespan=lifespan,
    )
    app.state.engine = server.engine
    return app


def load_models(
    paths: list[Path], *, checkpoints: Path = CHECKPOINTS, device: Any = "cpu"
) -> dict[str, Model]:
    """Each run (folder or checkpoint file) by its name: the run folder's name (a file's stem
    when it is not best.pt or last.pt); with no paths, the newest run under `checkpoints`."""
    models: dict[str, Model] = {}
    for path in paths or [None]:
        model = load(path, checkpoints=checkpoints, device=device, engine="torch")
        file = model.path
        run = RunFolder.of(file)
        name = run.name if run is not None else file.stem
        if name in models:
            raise UsageError(f"two runs are named {name!r}; serve each name once")
        models[name] = model
    return models


def run(models: Mapping[str, Model], cfg: ServeConfig, report: Report | None = None,
        signals: list[int] | None = None) -> None:  # fmt: skip
    """Serve until SIGINT or SIGTERM, then stop cleanly (see StoppingUvicorn); returns normally.
    `signals`: a list the caller's own handlers fill with the signals received (the CLI's,
    while the models load); a signal already there stops the server at once."""
    report = report or _ignore
    signals = [] if signals is None else signals
    handlers: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():  # only there can Python catch
        for sig in (signal.SIGINT, signal.SIGTERM):  # until uvicorn takes over, and after
            handlers[sig] = signal.signal(sig, lambda s, _frame: signals.append(s))
    try:
        sock = listen(cfg.host, cfg.port)
        app = create_app(models, cfg, report)
        server = StoppingUvicorn(uvicorn_config(app, cfg), app.state.engine, cfg.grace, signals)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        report("listening", {"url": f"http://{shown}:{port}", "models": list(models),
                             "max_batch": cfg.max_batch, "queue": cfg.queue,
                             "api_key": cfg.api_key is not None})  # fmt: skip
        try:
            server.run(sockets=[sock])
        finally:
            app.state.engine.stop()
            sock.close()
        report("stopped", {})
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
