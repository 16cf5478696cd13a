"""What a completion request gets back: OpenAI's completion object (`text_completion`) or chat
completion (`chat.completion`), collected whole, or streamed as server-sent events (chunks of
the same shape, `chat.completion.chunk` for chat) ending `data: [DONE]`.

A request is one job per prompt (a list of prompts: /v1/completions), each of n rows; choice
p·n + i is prompt p's sample i, as OpenAI numbers them. Each job's events reach the request's
one Channel with their row renumbered as its choice. With `echo`, a choice's text starts with
its prompt (and its logprobs with the prompt's tokens', the first null); `logprobs` are the
Token events of generate/logprobs.py, as OpenAI's completions (`tokens`, `token_logprobs`,
`top_logprobs`, `text_offset`) or chat (`content`: [{token, logprob, bytes, top_logprobs}])
define them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from charlstm.generate.logprobs import Token, openai_logprobs
from charlstm.serve.batching import Done, Event, Failed, Job, Text
from charlstm.serve.requests import ApiError, json_bytes, sse


class Channel:
    """Where one request's events arrive (on the event loop), and the watch on its client."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[list[Event] | None] = asyncio.Queue()
        self.watch: asyncio.Task[None] | None = None

    def put(self, job: Job, events: list[Event]) -> None:
        """A job's events, each row numbered as its choice (module docstring)."""
        first = getattr(job, "first", 0)
        if first:
            events = [e if isinstance(e, Failed) else e._replace(index=e.index + first)
                      for e in events]  # fmt: skip
        self.queue.put_nowait(events)

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


def failure(failed: Failed) -> ApiError:
    if failed.code == "shutting_down":
        return ApiError(503, failed.message, "server_error", failed.code)
    return ApiError(500, failed.message, "server_error", failed.code)


@dataclass
class Echo:
    """What a choice starts with: its prompt's text and, with logprobs, its prompt's tokens."""

    text: str = ""
    tokens: list[Token] | None = None


class Reply:
    """One request's answer (module docstring); `chat` gives chat completions' shapes."""

    def __init__(self, server: Any, jobs: list[Job], name: str, prompt_tokens: int, state: Any,
                 *, chat: bool = False, echo: list[Echo] | None = None) -> None:  # fmt: skip
        self.server, self.jobs, self.state, self.chat = server, jobs, state, chat
        self.prompt_tokens = prompt_tokens
        self.n = sum(job.n for job in jobs)
        self.per = jobs[0].n  # choices per prompt
        self.echo = echo
        self.logprobs = jobs[0].logprobs is not None
        self.rows_done = 0
        self.streaming = False
        self.offset = [0] * self.n  # characters of each choice's text sent so far
        self.opened = [False] * self.n  # its first chunk sent (the echo, the role)
        self.around: tuple[bytes, bytes] | None = None  # a stream chunk's bytes, less its choice
        self.channel: Channel = jobs[0].handle  # type: ignore[assignment]
        kind = "chat.completion" if chat else "text_completion"
        self.head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
                     "object": kind, "created": int(time.time()), "model": name}  # fmt: skip
        self.state.tokens = 0

    def close(self) -> None:
        """The request is over: stop watching its client, free its rows if they still run."""
        if self.channel.watch is not None:
            self.channel.watch.cancel()
        for job in self.jobs:
            self.server.engine.cancel(job)

    def gone(self) -> Response:
        self.state.gone = True
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    def _usage(self) -> dict[str, int]:
        done = self.state.tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done,
                "total_tokens": self.prompt_tokens + done}  # fmt: skip

    def _take(self, events: list[Event], texts: dict[int, list[str]],
              tokens: dict[int, list[Token]], reasons: dict[int, str]) -> Failed | None:
        """Sort events by choice; the failure among them, if any."""
        for e in events:
            if isinstance(e, Text):
                texts.setdefault(e.index, []).append(e.text)
            elif isinstance(e, Token):
                tokens.setdefault(e.index, []).append(e)
            elif isinstance(e, Done):
                reasons[e.index] = e.reason
                self.state.tokens += e.tokens
                self.rows_done += 1
            else:
                return e
        return None

    def _choice(self, i: int, text: str, tokens: list[Token], reason: str | None) -> dict:
        """Choice i's news: its text and tokens since the last, in the request's shape."""
        if not self.opened[i] and self.echo is not None:
            echo = self.echo[i // self.per]
            text, tokens = echo.text + text, (echo.tokens or []) + tokens
        logprobs = None
        if self.logprobs:
            logprobs = (_chat_logprobs(tokens) if self.chat
                        else openai_logprobs(tokens, self.offset[i]))  # fmt: skip
        self.offset[i] += len(text)
        opened, self.opened[i] = self.opened[i], True
        if not self.chat:
            return {"text": text, "index": i, "logprobs": logprobs, "finish_reason": reason}
        if not self.streaming:  # whole: a message
            return {"index": i, "message": {"role": "assistant", "content": text},
                    "logprobs": logprobs, "finish_reason": reason}  # fmt: skip
        delta = ({} if opened else {"role": "assistant"}) | ({"content": text} if text else {})
        return {"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": reason}

    async def collect(self, events: list[Event] | None) -> Response:
        texts: dict[int, list[str]] = {}
        tokens: dict[int, list[Token]] = {}
        reasons: dict[int, str] = {}
        while True:
            if events is None:
                return self.gone()
            failed = self._take(events, texts, tokens, reasons)
            if failed is not None:
                raise failure(failed)
            if len(reasons) == self.n:
                break
            events = await self.channel.get()
        choices = [self._choice(i, "".join(texts.get(i, ())), tokens.get(i, []), reasons[i])
                   for i in range(self.n)]  # fmt: skip
        return JSONResponse({**self.head, "choices": choices, "usage": self._usage(),
                             "seed": self.jobs[0].seed})  # fmt: skip

    def stream(self, first: list[Event]) -> ASGIApp:
        self.streaming = True

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
        tokens: dict[int, list[Token]] = {}
        reasons: dict[int, str] = {}
        failed = self._take(events, texts, tokens, reasons)
        if failed is not None:
            error = failure(failed)
            body = {"message": error.message, "type": error.kind, "code": error.code}
            return sse({"error": body}) + b"data: [DONE]\n\n", True
        if self.around is None:  # what every chunk of this stream has around its choice
            head = {**self.head, "object": "chat.completion.chunk"} if self.chat else self.head
            before = b"data: " + json_bytes(head)[:-1] + b',"choices":['
            self.around = before, b'],"seed":%d}\n\n' % self.jobs[0].seed
        before, after = self.around
        out = []
        for i in sorted(texts.keys() | tokens.keys() | reasons.keys()):
            choice = self._choice(i, "".join(texts.get(i, ())), tokens.get(i, []),
                                  reasons.get(i))  # fmt: skip
            out.append(before + json_bytes(choice) + after)
        finished = self.rows_done == self.n
        if finished:
            out.append(b"data: [DONE]\n\n")
        return b"".join(out), finished


def _chat_logprobs(tokens: list[Token]) -> dict[str, list[dict[str, Any]]]:
    """Chat completions' logprobs: {"content": [{token, logprob, bytes, top_logprobs}]}."""

    def one(text: str, logprob: float | None) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {"content": [{**one(t.text, t.logprob),
                         "top_logprobs": [one(p, lp) for p, lp in t.top or ()]}
                        for t in tokens]}  # fmt: skip
