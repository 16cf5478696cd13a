"""`charlstm serve`: trained models behind an OpenAI-style HTTP API, every request one or more
rows of a batched recurrent step (batching.py). Needs the `[serve]` extra (Starlette, uvicorn
with httptools and uvloop, pydantic).

    POST /v1/completions   {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k",
                            "seed", "n", "stop", "stream", "on_unknown"} → OpenAI's completion
                           object, or with "stream": true server-sent events ending `[DONE]`
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

Before a request reaches the app, the connection (_Protocol) must deliver its request line and
headers within ServeConfig.head_timeout seconds and MAX_HEAD bytes, and its body within
body_timeout: a slow or endless client is cut off, holding little memory meanwhile. A client
that leaves mid-body is one log line (499), not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from charlstm.api import Model, load, random_seed
from charlstm.config import CHECKPOINTS, SampleConfig, ServeConfig
from charlstm.errors import CharlstmError, OptionError, UsageError
from charlstm.evaluation.exact import predictions
from charlstm.generate.choose import MAX_SEED
from charlstm.generate.options import Caps, check_sampling
from charlstm.serve.batching import Done, Engine, Event, Failed, Job, QueueFull, ShuttingDown, Text

MAX_BODY = 1 << 20  # bytes in a request body
MAX_HEAD = 64 << 10  # bytes in a request line and its headers (nginx allows 4 × 8 KB lines)
MAX_PROMPT_TOKENS = 16_384  # a prompt's tokens (a char LSTM remembers far less than that)
MAX_SCORE_TOKENS = 200_000  # tokens /score reads in one request (~10 s of a 2×512 on a CPU)
MAX_STOPS, MAX_STOP_CHARS = 4, 256  # as OpenAI: at most 4 stop strings

Report = Callable[[str, dict[str, Any]], None]


def _ignore(event: str, data: dict[str, Any]) -> None:
    pass


# ----------------------------------------------------------------------------------- requests


class _Strict(BaseModel):
    # Wrong types are refused, not converted ("5" is no integer); unknown fields too, so that a
    # misspelt or unsupported option (logprobs, echo, best_of…) is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True)


class CompletionRequest(_Strict):
    model: str | None = None  # may be left out when one model is served
    prompt: str | None = None  # "" or absent: start as at the beginning of a line
    max_tokens: int | None = Field(None, ge=1)  # default: SampleConfig.length, capped
    temperature: float | None = Field(None, ge=0, allow_inf_nan=False)  # 0: greedy
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)  # not OpenAI's; 0 = all
    seed: int | None = Field(None, ge=0, le=MAX_SEED)  # absent: random, returned as "seed"
    n: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stream: bool | None = None
    on_unknown: Literal["error", "skip"] | None = None  # prompt characters the model never saw
    user: str | None = None  # accepted and ignored, as OpenAI's clients may send it


class ScoreRequest(_Strict):
    model: str | None = None
    text: str


class ApiError(Exception):
    """A request that gets an error response (never a 500: those are bugs)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.code, self.param, self.headers = code, param, headers

    def response(self) -> JSONResponse:
        body = {"message": self.message, "type": self.kind, "code": self.code, "param": self.param}
        return JSONResponse({"error": body}, self.status, headers=self.headers)


async def _parse(request: Request, cls: type[_Strict], timeout: float) -> Any:
    """The body as `cls`: JSON only (a page elsewhere cannot send that without asking first),
    read at most MAX_BODY bytes far, within `timeout` seconds."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, "the request body must be JSON: send the header 'Content-Type: "
                       "application/json'", code="unsupported_media_type")  # fmt: skip
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise _too_large()

    async def read() -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise _too_large()
        return bytes(body)

    try:
        body = await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout:g} s",
                       code="request_timeout", headers={"Connection": "close"}) from None
    except ClientDisconnect:
        raise _Gone() from None
    try:
        return cls.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = f"{where}: {first['msg']}" if where else first["msg"]
        raise ApiError(400, message, param=str(first["loc"][0]) if first["loc"] else None) from e


class _Gone(Exception):
    """The client went away before its request was read: nobody to answer (logged as 499)."""


def _too_large() -> ApiError:
    # Connection: close, since the rest of the body will not be read
    return ApiError(413, f"the request body is over {MAX_BODY:,} bytes", code="request_too_large",
                    headers={"Connection": "close"})  # fmt: skip


_NAMES = {"length": "max_tokens", "temp": "temperature"}  # generate/options.py's -> ours


def _bad(message: str, param: str) -> ApiError:
    return ApiError(400, message, param=param)


# ----------------------------------------------------------------------------------- the app


class _Channel:
    """Where one request's events arrive (on the event loop), and the watch on its client."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[list[Event] | None] = asyncio.Queue()
        self.watch: asyncio.Task[None] | None = None

    async def get(self) -> list[Event] | None:
        """The events gathered since the last call (waiting for one); None: the client left."""
        first = await self.queue.get()
        if first is None:
            return None
        events = list(first)
        while not self.queue.empty():
            more = self.queue.get_nowait()
            if more is None:
                return None
            events.extend(more)
        return events


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
            raise _bad(f"model is required: one of {', '.join(self.models)}", "model")
        if name not in self.models:
            served = ", ".join(self.models)
            raise ApiError(404, f"no model named {name!r}; this server has {served}",
                           code="model_not_found", param="model")  # fmt: skip
        return name, self.models[name]

    # ------------------------------------------------------------------- completions

    def _job(self, name: str, model: Model, req: CompletionRequest) -> tuple[Job, int]:
        """The request as an engine job, every option checked against this server's limits,
        and the prompt's length in tokens."""
        cfg = self.cfg
        caps = Caps(cfg.max_tokens, min(SampleConfig.length, cfg.max_tokens), MAX_STOPS,
                    MAX_STOP_CHARS)  # fmt: skip
        try:  # the sampling options, checked as the CLI's and the API's are
            given = check_sampling(length=req.max_tokens, temp=req.temperature, top_k=req.top_k,
                                   top_p=req.top_p, seed=req.seed, stop=req.stop, caps=caps,
                                   names=_NAMES)  # fmt: skip
        except OptionError as e:
            raise _bad(str(e), e.option) from e  # type: ignore[attr-defined]
        n = req.n or 1
        if n > cfg.max_batch:
            raise _bad(f"n must be at most {cfg.max_batch}, got {n}", "n")
        sample, stop = given.cfg, given.stop
        prompt = req.prompt or ""
        tok = model.tokenizer
        unknown = tok.unknown(prompt) if req.on_unknown != "skip" else []
        if unknown:
            what = "words" if tok.kind == "word" else "characters"
            shown = " ".join(unknown[:10]) if tok.kind == "word" else "".join(unknown[:20])
            raise _bad(f"the prompt has {what} the model never saw: {shown!r}; remove them or "
                       'send "on_unknown": "skip"', "prompt")  # fmt: skip
        ids = model.encode_prime(prompt, "skip")
        if len(ids) > MAX_PROMPT_TOKENS:
            raise _bad(f"the prompt is {len(ids):,} tokens; at most {MAX_PROMPT_TOKENS:,}",
                       "prompt")  # fmt: skip
        seed = random_seed() if req.seed is None else req.seed
        job = Job(name, ids, sample, seed, n=n, stop=stop, handle=_Channel())
        return job, len(ids) if prompt else 0  # no prompt: the newline it starts from is ours

    async def completions(self, request: Request) -> Any:
        t0 = time.perf_counter()
        req = await _parse(request, CompletionRequest, self.cfg.body_timeout)
        name, model = self._model(req.model)
        try:
            job, prompt_tokens = self._job(name, model, req)
        except CharlstmError as e:  # a range the config checks (config.py)
            raise ApiError(400, str(e)) from e
        request.state.model = name
        channel: _Channel = job.handle
        try:
            self.engine.submit(job)
        except QueueFull as e:
            raise ApiError(503, f"{e}; try again shortly", "server_error", "queue_full",
                           headers={"Retry-After": "1"}) from e  # fmt: skip
        except ShuttingDown as e:
            raise ApiError(503, str(e), "server_error", "shutting_down") from e
        channel.watch = asyncio.create_task(self._watch(request.receive, job))
        reply: _Reply | None = _Reply(self, job, name, prompt_tokens, request.state)
        try:
            first = await channel.get()  # the first tokens: what a status code can still say
            request.state.first = time.perf_counter() - t0
            if first is None:
                return reply.gone()
            failure = next((e for e in first if isinstance(e, Failed)), None)
            if failure is not None:
                raise _failure(failure)
            if req.stream:
                stream, reply = reply.stream(first), None  # the stream finishes the job
                return stream
            return await reply.collect(first)
        finally:
            if reply is not None:
                reply.close()

    async def _watch(self, receive: Receive, job: Job) -> None:
        """Cancel the job when its client disconnects."""
        while (await receive())["type"] != "http.disconnect":
            pass
        self.engine.cancel(job)
        job.handle.queue.put_nowait(None)

    def deliver(self, updates: list[tuple[Job, list[Event]]]) -> None:
        """Events from the decode loop, on the event loop: into each request's channel."""
        for job, events in updates:
            job.handle.queue.put_nowait(events)

    # ------------------------------------------------------------------- scoring

    async def score(self, request: Request) -> Response:
        req = await _parse(request, ScoreRequest, self.cfg.body_timeout)
        name, model = self._model(req.model)
        request.state.model = name
        encoded = model.encode_text(req.text)
        tokens = predictions(len(encoded.ids))  # what is scored: as evaluate's "tokens"
        if tokens > MAX_SCORE_TOKENS:
            raise _bad(f"the text is {tokens:,} tokens; at most {MAX_SCORE_TOKENS:,} per "
                       "request", "text")  # fmt: skip
        if len(encoded.ids) < 2:
            raise _bad("the text is too short to score: it needs at least 2 tokens the model "
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


def _failure(failed: Failed) -> ApiError:
    if failed.code == "shutting_down":
        return ApiError(503, failed.message, "server_error", failed.code)
    return ApiError(500, failed.message, "server_error", failed.code)


class _Reply:
    """One completion's answer: collected whole, or streamed as server-sent events."""

    def __init__(self, server: _Server, job: Job, name: str, prompt_tokens: int,
                 state: Any) -> None:  # fmt: skip
        self.server, self.job, self.state = server, job, state
        self.prompt_tokens = prompt_tokens
        self.rows_done = 0
        self.around: tuple[bytes, bytes] | None = None  # a stream chunk's bytes, less its choice
        self.channel: _Channel = job.handle
        self.head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                     "created": int(time.time()), "model": name}  # fmt: skip
        self.state.tokens = 0

    def close(self) -> None:
        """The request is over: stop watching its client, free its rows if it still runs."""
        if self.channel.watch is not None:
            self.channel.watch.cancel()
        self.server.engine.cancel(self.job)

    def gone(self) -> Response:
        self.state.gone = True
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    def _usage(self) -> dict[str, int]:
        done = self.state.tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done,
                "total_tokens": self.prompt_tokens + done}  # fmt: skip

    async def collect(self, events: list[Event] | None) -> Response:
        n = self.job.n
        texts: list[list[str]] = [[] for _ in range(n)]
        reasons: list[str | None] = [None] * n
        while True:
            if events is None:
                return self.gone()
            for e in events:
                if isinstance(e, Text):
                    texts[e.index].append(e.text)
                elif isinstance(e, Done):
                    reasons[e.index] = e.reason
                    self.state.tokens += e.tokens
                else:
                    raise _failure(e)
            if None not in reasons:
                break
            events = await self.channel.get()
        choices = [{"text": "".join(texts[i]), "index": i, "logprobs": None,
                    "finish_reason": reasons[i]} for i in range(n)]  # fmt: skip
        return JSONResponse({**self.head, "choices": choices, "usage": self._usage(),
                             "seed": self.job.seed})  # fmt: skip

    def stream(self, first: list[Event]) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]})  # fmt: skip
                events: list[Event] | None = first
                while events is not None:
                    body, finished = self._chunks(events)
                    await send({"type": "http.response.body", "body": body,
                                "more_body": not finished})  # fmt: skip
                    if finished:
                        return
                    events = await self.channel.get()
                self.state.gone = True
            except OSError:  # a server on ASGI 2.4 says so when the client has gone
                self.state.gone = True
            finally:
                self.close()

        return app

    def _chunks(self, events: list[Event]) -> tuple[bytes, bool]:
        """Server-sent events for what gathered: one chunk per choice that has news; after the
        last choice's end (or an error), `data: [DONE]`."""
        texts: dict[int, list[str]] = {}
        reasons: dict[int, str] = {}
        out = []
        for e in events:
            if isinstance(e, Text):
                texts.setdefault(e.index, []).append(e.text)
            elif isinstance(e, Done):
                reasons[e.index] = e.reason
                self.state.tokens += e.tokens
                self.rows_done += 1
            else:
                error = _failure(e)
                body = {"message": error.message, "type": error.kind, "code": error.code}
                out.append(_sse({"error": body}))
                out.append(b"data: [DONE]\n\n")
                return b"".join(out), True
        if self.around is None:  # what every chunk of this stream has around its choice
            before = b"data: " + _json(self.head)[:-1] + b',"choices":['
            self.around = before, b'],"seed":%d}\n\n' % self.job.seed
        before, after = self.around
        for i in sorted(texts.keys() | reasons.keys()):
            choice = {"text": "".join(texts.get(i, ())), "index": i, "logprobs": None,
                      "finish_reason": reasons.get(i)}  # fmt: skip
            out.append(before + _json(choice) + after)
        finished = self.rows_done == self.job.n
        if finished:
            out.append(b"data: [DONE]\n\n")
        return b"".join(out), finished


def _json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + _json(obj) + b"\n\n"


# ----------------------------------------------------------------------------------- middleware


LOOPBACK = ("127.0.0.1", "localhost", "::1")  # the names a local client may use in Host
WILDCARDS = ("0.0.0.0", "::")  # hosts that listen on every address


def _split_host(value: str) -> tuple[str, str]:
    """A Host header (or an origin's host) as (name, port): "[::1]:80" → ("::1", "80")."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else rest
    if value.count(":") == 1:
        name, _, port = value.partition(":")
        return name, port
    return value, ""


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class _Guard:
    """Who may talk to the server, checked before anything else. The Host header must name
    this server: a loopback name, --host (any IP address when it listens on all of them) or an
    --allow-host, at the port it listens on; so a page whose own name was pointed at 127.0.0.1
    (DNS rebinding) is refused. A request a browser sends for a web page (it carries an Origin)
    must come from this server's own origin or an --allow-origin, which gets CORS headers. With
    an API key, every request must carry `Authorization: Bearer KEY`. Each refusal is a 4xx
    JSON error."""

    def __init__(self, app: ASGIApp, cfg: ServeConfig) -> None:
        self.app = app
        key = cfg.api_key
        self.expected = None if key is None else f"Bearer {key}".encode()
        host = _split_host(cfg.host)[0]
        self.hosts = {*LOOPBACK, host, *cfg.allow_hosts}
        self.any_host = "*" in cfg.allow_hosts
        self.any_ip = host in WILDCARDS
        self.origins = set(cfg.allow_origins)

    def _host_ok(self, value: str, port: int | None) -> bool:
        name, given = _split_host(value)
        if given and (not given.isdigit() or (port is not None and int(given) != port)):
            return False
        return self.any_host or name in self.hosts or (self.any_ip and _is_ip(name))

    def _refusal(self, scope: Scope) -> tuple[ApiError | None, bytes | None]:
        """The error the request gets (None: it may pass), and the Origin that gets CORS
        headers."""
        headers = dict(scope["headers"])  # (a repeated header: its last value)
        port = (scope.get("server") or (None, None))[1]
        host = headers.get(b"host")
        if host is not None and not self._host_ok(host.decode("latin-1"), port):
            name = host.decode("latin-1")
            return ApiError(403, f"this server does not answer to the host {name!r}; start it "
                            "with --allow-host NAME to allow it", code="host_not_allowed"), None
        origin = headers.get(b"origin")
        if origin is None:
            return None, None
        text = origin.decode("latin-1").strip().lower().rstrip("/")
        if "*" in self.origins or text in self.origins:
            return None, origin
        if host is not None and text == "http://" + host.decode("latin-1").strip().lower():
            return None, None  # the server's own origin (its Host, checked above): not cross-site
        return ApiError(403, f"requests from the web page {text!r} are not allowed; start the "
                        "server with --allow-origin ORIGIN to allow them",
                        code="origin_not_allowed"), None  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error, origin = self._refusal(scope)
        if error is not None:
            await error.response()(scope, receive, send)
            return
        if origin is not None:
            cors = [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
            if scope["method"] == "OPTIONS":  # a browser asks before a JSON or keyed request
                allow = {"Access-Control-Allow-Methods": "GET, POST",
                         "Access-Control-Allow-Headers": "Authorization, Content-Type",
                         "Access-Control-Max-Age": "600",
                         **{k.decode(): v.decode("latin-1") for k, v in cors}}  # fmt: skip
                await Response(status_code=204, headers=allow)(scope, receive, send)
                return
            inner = send

            async def send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), *cors]}
                await inner(message)

        if self.expected is not None:
            given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not hmac.compare_digest(given, self.expected):
                error = ApiError(401, "a valid API key is required: send the header "
                                 "'Authorization: Bearer KEY'", code="invalid_api_key",
                                 headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _AccessLog:
    """One report per request when it ends: status, model, tokens, seconds to the first
    token, seconds in all. A request still running when the server's shutdown gives up on it
    (uvicorn cancels its task) ends here with a 503, or its stream ends, instead of a
    traceback."""

    def __init__(self, app: ASGIApp, report: Report) -> None:
        self.app, self.report = app, report

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status, started = 500, False

        async def sending(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:  # the outermost layer: nothing above waits for it
            if started:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                cut = ApiError(503, "the server stopped before this request finished",
                               "server_error", "shutting_down")  # fmt: skip
                await cut.response()(scope, receive, sending)
        finally:
            state = scope.get("state", {})
            client = scope.get("client") or ("-", 0)
            self.report("request", {
                "client": client[0], "method": scope["method"], "path": scope["path"],
                "status": 499 if state.get("gone") else status, "model": state.get("model"),
                "tokens": state.get("tokens"), "first": state.get("first"),
                "seconds": time.perf_counter() - t0})  # fmt: skip


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
        Route("/v1/models", server.list_models, methods=["GET"]),
        Route("/health", server.health, methods=["GET"]),
        Route("/score", server.score, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_AccessLog, report=report), Middleware(_Guard, cfg=cfg)],
        exception_handlers={ApiError: api_error, HTTPException: http_error, _Gone: gone,
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
        name = file.parent.name if file.name in ("best.pt", "last.pt") else file.stem
        if name in models:
            raise UsageError(f"two runs are named {name!r}; serve each name once")
        models[name] = model
    return models


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as e:
        raise CharlstmError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e


class _Protocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 connection (httptools), with the limits it lacks. uvicorn waits
    forever for a request's line and headers and buffers them without bound; here they must
    arrive within `head_timeout` seconds (from the connection or the request's first byte) and
    MAX_HEAD bytes, else 408 or 431 and the connection is closed. Its body must arrive within
    `body_timeout` (the app answers 408 then; this closes connections whose body nobody
    reads, a second later). At shutdown a request still receiving its body is cut."""

    head_timeout = 10.0
    body_timeout = 30.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._timer: asyncio.TimerHandle | None = None
        self._head: int | None = 0  # bytes of the current request line and headers; None: past
        self._began = self._ended = False  # a request began, ended in this data_received
        self._limit(self.head_timeout, 408, "the request line and headers did not arrive within "
                    f"{self.head_timeout:g} s")  # fmt: skip

    def _limit(self, seconds: float, status: int, message: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(seconds, self._refuse, status, message)

    def _unlimit(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` (when no response is under way on this connection) and close it."""
        self._unlimit()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            body = _json({"error": {"message": message, "type": "invalid_request_error",
                                    "code": {408: "request_timeout"}.get(status,
                                                                         "headers_too_large"),
                                    "param": None}})  # fmt: skip
            phrase = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                                 % (status, phrase, len(body), body))  # fmt: skip
        elif not self.cycle.response_started:
            self.cycle.disconnected = True  # the app sees its client gone
            self.cycle.message_event.set()
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._began = self._ended = False
        super().data_received(data)
        # Bytes of a head are counted once the chunk is parsed; a chunk in which one request
        # ended and the next began (pipelined) is not counted: at most a chunk more is held.
        mixed = self._began and self._ended
        if self._head is not None and not mixed and not self.transport.is_closing():
            self._head += len(data)
            if self._head > MAX_HEAD:
                self._refuse(431, f"the request line and headers are over {MAX_HEAD:,} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._began, self._head = True, 0
        if self._timer is None:  # (a connection's first request: timed since it was made)
            self._limit(self.head_timeout, 408, "the request line and headers did not arrive "
                        f"within {self.head_timeout:g} s")  # fmt: skip

    def on_headers_complete(self) -> None:
        self._head = None
        self._limit(self.body_timeout + 1, 408, "the request body did not arrive within "
                    f"{self.body_timeout:g} s")  # fmt: skip
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._unlimit()
        self._ended = True
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._unlimit()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete and self.cycle.more_body:
            self._refuse(408, "the server is shutting down")  # still receiving its body: cut
        else:
            super().shutdown()


def uvicorn_config(app: Starlette, cfg: ServeConfig) -> uvicorn.Config:
    """How uvicorn serves `app`: with _Protocol's limits, our logging (none of uvicorn's) and
    the app's lifespan; shutdown gives running requests `grace` seconds and a few more."""
    protocol = type("Protocol", (_Protocol,), {"head_timeout": cfg.head_timeout,
                                                "body_timeout": cfg.body_timeout})  # fmt: skip
    return uvicorn.Config(app, http=protocol, log_config=None, access_log=False, lifespan="on",
                          timeout_graceful_shutdown=int(cfg.grace) + 5)  # fmt: skip


class _Uvicorn(uvicorn.Server):
    """uvicorn, stopping our way: the first SIGINT/SIGTERM stops taking requests and gives the
    running ones `grace` seconds before they are cut; a further one cuts them at once. Either
    way the app's lifespan shutdown runs and the process then exits 0. (uvicorn's own second
    signal skips that shutdown, and asyncio then cancels the lifespan task: a CancelledError
    traceback, which `timeout` provoked by signalling both the process and its group; uvicorn
    would also re-raise the signal.) Signals received before uvicorn took over (`signals`)
    stop it as soon as it listens."""

    def __init__(self, config: uvicorn.Config, engine: Engine, grace: float,
                 signals: list[int]) -> None:  # fmt: skip
        super().__init__(config)
        self.engine, self.grace, self.signals = engine, grace, signals

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)
        self._stop()

    def _stop(self) -> None:
        # Often in a signal handler: plain assignments only (engine.close takes no lock).
        if self.should_exit:
            self.engine.close(0.0)
        else:
            self.should_exit = True
            self.engine.close(self.grace)

    async def on_tick(self, counter: int) -> bool:
        if self.signals and not self.should_exit:
            self._stop()
        return await super().on_tick(counter)


def run(models: Mapping[str, Model], cfg: ServeConfig, report: Report | None = None,
        signals: list[int] | None = None) -> None:  # fmt: skip
    """Serve until SIGINT or SIGTERM, then stop cleanly (see _Uvicorn); returns normally.
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
        server = _Uvicorn(uvicorn_config(app, cfg), app.state.engine, cfg.grace, signals)
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
