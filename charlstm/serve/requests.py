"""What a request to `charlstm serve` may say, checked before anything runs: the size limits,
the request bodies (pydantic, strict: wrong types and unknown fields refused), reading a body
within its limits, and ApiError, the OpenAI-style JSON error every refusal becomes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from charlstm.generate.choose import MAX_SEED

Report = Callable[[str, dict[str, Any]], None]  # (event, data): the server's log


MAX_BODY = 1 << 20  # bytes in a request body
MAX_HEAD = 64 << 10  # bytes in a request line and its headers (nginx allows 4 × 8 KB lines)
MAX_PROMPT_TOKENS = 16_384  # a prompt's tokens (a char LSTM remembers far less than that)
MAX_SCORE_TOKENS = 200_000  # tokens /score reads in one request (~10 s of a 2×512 on a CPU)
MAX_STOPS, MAX_STOP_CHARS = 4, 256  # as OpenAI: at most 4 stop strings
MAX_LOGPROBS = 5  # /v1/completions' logprobs at most, as OpenAI's (chat's top_logprobs: 20)
MAX_MESSAGES = 1000  # messages in one chat request


class _Strict(BaseModel):
    # Wrong types are refused, not converted ("5" is no integer); unknown fields too, so that a
    # misspelt or unsupported option (best_of, suffix…) is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True)


class JsonSchemaFormat(_Strict):
    """OpenAI's response_format.json_schema: the schema under "schema" (name, strict and
    description are taken and not needed)."""

    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    """OpenAI's response_format: free text, or JSON that a schema accepts."""

    type: Literal["text", "json_schema"]  # (json_object's open-ended schema takes seconds to
    # compile, for every vocabulary: not offered)
    json_schema: JsonSchemaFormat | None = None


class _Sampling(_Strict):
    """What /v1/completions and /v1/chat/completions both take."""

    model: str | None = None  # may be left out when one model is served
    max_tokens: int | None = Field(None, ge=0)  # default: SampleConfig.length, capped; 0: echo
    temperature: float | None = Field(None, ge=0, allow_inf_nan=False)  # 0: greedy
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)  # not OpenAI's; 0 = all
    seed: int | None = Field(None, ge=0, le=MAX_SEED)  # absent: random, returned as "seed"
    n: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stream: bool | None = None
    on_unknown: Literal["error", "skip"] | None = None  # prompt characters the model never saw
    user: str | None = None  # accepted and ignored, as OpenAI's clients may send it
    # Only text that matches (generate/constrain.py), named as vLLM names them; or OpenAI's
    # response_format.
    guided_regex: str | None = None
    guided_json: dict[str, Any] | str | None = None  # a schema, or its JSON text
    response_format: ResponseFormat | None = None


class CompletionRequest(_Sampling):
    # "" or absent: start as at the beginning of a line; a list: n choices for each
    prompt: str | list[str] | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)  # each token's, and the top K
    echo: bool | None = None  # the prompt (with logprobs: its tokens' too) before the text


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None  # a list: the text parts, joined
    name: str | None = Field(None, min_length=1, max_length=64)  # its speaker's name


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens
    logprobs: bool | None = None  # each token's log-probability ...
    top_logprobs: int | None = Field(None, ge=0, le=20)  # ... and the top K (with logprobs)


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


async def parse_body(request: Request, cls: type[_Strict], timeout: float) -> Any:
    """The body as `cls`: JSON only (a page elsewhere cannot send that without asking first),
    read at most MAX_BODY bytes far, within `timeout` seconds."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, "the request body must be JSON: send the header 'Content-Type: "
                       "application/json'", code="unsupported_media_type")  # fmt: skip
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise too_large()

    async def read() -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise too_large()
        return bytes(body)

    try:
        body = await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout:g} s",
                       code="request_timeout", headers={"Connection": "close"}) from None
    except ClientDisconnect:
        raise Gone() from None
    try:
        return cls.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = f"{where}: {first['msg']}" if where else first["msg"]
        raise ApiError(400, message, param=str(first["loc"][0]) if first["loc"] else None) from e


class Gone(Exception):
    """The client went away before its request was read: nobody to answer (logged as 499)."""


def too_large() -> ApiError:
    # Connection: close, since the rest of the body will not be read
    return ApiError(413, f"the request body is over {MAX_BODY:,} bytes", code="request_too_large",
                    headers={"Connection": "close"})  # fmt: skip


def bad(message: str, param: str | None) -> ApiError:
    return ApiError(400, message, param=param)


def steering(
    req: _Sampling, names: dict[str, str]
) -> tuple[dict[str, str], dict[str, Any]]:
    """The option names for check_sampling's messages (`names` and ours), and the pattern
    options it takes, from vLLM's guided_regex and guided_json or OpenAI's response_format."""
    steer: dict[str, Any] = {"regex": req.guided_regex, "json_schema": req.guided_json}
    names = {**names, "regex": "guided_regex", "json_schema": "guided_json"}
    form = req.response_format
    if form is not None and form.type != "text":
        if req.guided_json is not None or req.guided_regex is not None:
            raise bad("give response_format or guided_regex/guided_json, not both",
                      "response_format")
        if form.json_schema is None:
            raise bad("response_format of type json_schema needs its json_schema",
                      "response_format")
        steer["json_schema"], names["json_schema"] = form.json_schema.schema_, "response_format"
    return names, steer


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json_bytes(obj) + b"\n\n"
