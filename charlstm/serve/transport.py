"""The connection under the app: a listening socket, uvicorn's HTTP protocol with the time and
size limits it lacks for a request's head and body, and uvicorn stopping our way on
SIGINT/SIGTERM (running requests get `grace` seconds, then the process exits 0)."""

from __future__ import annotations

import asyncio
import socket
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from charlstm.config import ServeConfig
from charlstm.errors import CharlstmError
from charlstm.serve.batching import Engine
from charlstm.serve.requests import MAX_HEAD, json_bytes


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as e:
        raise CharlstmError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e


class LimitedProtocol(HttpToolsProtocol):
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
            body = json_bytes({"error": {"message": message, "type": "invalid_request_error",
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
    """How uvicorn serves `app`: with LimitedProtocol's limits, our logging (none of uvicorn's) and
    the app's lifespan; shutdown gives running requests `grace` seconds and a few more."""
    protocol = type("Protocol", (LimitedProtocol,), {"head_timeout": cfg.head_timeout,
                                                "body_timeout": cfg.body_timeout})  # fmt: skip
    return uvicorn.Config(app, http=protocol, log_config=None, access_log=False, lifespan="on",
                          timeout_graceful_shutdown=int(cfg.grace) + 5)  # fmt: skip


class StoppingUvicorn(uvicorn.Server):
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
