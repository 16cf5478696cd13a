"""The middleware in front of the app: the Host, Origin and API-key guard (a browser page
elsewhere, or DNS rebinding, must not reach a local server) and the access log."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from charlstm.config import ServeConfig
from charlstm.serve.requests import ApiError, Report

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


class Guard:
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


class AccessLog:
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
