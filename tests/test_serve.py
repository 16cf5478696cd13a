"""`charlstm serve` as its clients meet it: a real uvicorn on a free loopback port, real HTTP.
Completions (whole, streamed, n > 1, stop strings) give the text `charlstm sample` gives with
the same seed, whoever else shares the batch; a client that leaves frees its row at once; every
malformed request gets a 4xx with a JSON error, never a 5xx; the API key; SIGINT and SIGTERM
stop the server cleanly with status 0. Every call is bounded in time."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

import charlstm
from charlstm.cli import app as cli
from charlstm.config import SampleConfig, ServeConfig
from charlstm.serve.batching import Done, Engine, Failed, Job, Text
from charlstm.serve.requests import MAX_BODY, MAX_HEAD
from charlstm.serve.server import create_app, load_models
from charlstm.serve.transport import listen, uvicorn_config

from .conftest import PLAY

TINY = {"hidden": 24, "layers": 2, "batch_size": 4, "window": 16, "lr": 1e-2, "warmup": 5,
        "threads": 1, "precision": "fp32"}  # fmt: skip
LONG = 1_000_000  # max_tokens of a request that must not finish by itself during a test
T = 10.0  # seconds any one call may take
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoints folder with a tiny trained run "tiny" and a copy of it named "other"."""
    root = tmp_path_factory.mktemp("serve")
    corpus = root / "play.txt"
    corpus.write_text(PLAY, encoding="utf-8")
    charlstm.train([str(corpus)], steps=40, name="tiny", checkpoints=root / "ck", **TINY)
    shutil.copytree(root / "ck" / "tiny", root / "ck" / "other")
    return root / "ck"


@contextlib.contextmanager
def serving(models: dict, report=None, **options) -> Iterator[str]:
    """A real uvicorn serving `models` in a thread on a free loopback port; yields its URL."""
    cfg = ServeConfig(**{"max_tokens": LONG, **options})
    sock = listen("127.0.0.1", 0)
    app = create_app(models, cfg, report)
    server = uvicorn.Server(uvicorn_config(app, cfg))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + T
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(T)
        assert not thread.is_alive()
        assert not app.state.engine.errors  # the decode loop met no bug


@pytest.fixture(scope="module")
def models(runs: Path) -> dict:
    return load_models([runs / "tiny", runs / "other"])


@pytest.fixture(scope="module")
def url(models: dict) -> Iterator[str]:
    with serving(models) as base:
        yield base


def complete(url: str, **body) -> dict:
    r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", **body}, timeout=T)
    assert r.status_code == 200, r.text
    return r.json()


def stream(url: str, **body) -> tuple[list[dict], str]:
    """The events of a streamed completion, and the line that ended it."""
    events, last = [], ""
    payload = {"model": "tiny", "stream": True, **body}
    with httpx.stream("POST", f"{url}/v1/completions", json=payload, timeout=T) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                last = line
                if line != "data: [DONE]":
                    events.append(json.loads(line[6:]))
    return events, last


def texts(events: list[dict], n: int = 1) -> list[str]:
    out = [""] * n
    for e in events:
        for c in e["choices"]:
            out[c["index"]] += c["text"]
    return out


def rows(url: str, want: int = 0, within: float = 2.0) -> int:
    """The server's live rows, once they reach `want` (or time runs out)."""
    deadline = time.monotonic() + within
    while True:
        live = httpx.get(f"{url}/health", timeout=T).json()
        if live["rows"] + live["prefilling"] + live["queued"] == want:
            return want
        if time.monotonic() > deadline:
            return live["rows"] + live["prefilling"] + live["queued"]
        time.sleep(0.02)


def cli_sample(run: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["sample", "-m", str(run), "--threads", "1", "--quiet", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


# ----------------------------------------------------------------------------------- results


def test_a_seed_gives_the_text_charlstm_sample_gives(url: str, runs: Path) -> None:
    expected = cli_sample(runs / "tiny", "--seed", "7", "--prime", "ROMEO:", "--length", "120",
                          "--temp", "1.0")  # fmt: skip
    assert expected.startswith("ROMEO:")
    expected = expected[len("ROMEO:") :]  # the CLI echoes the prime, then exactly the text
    whole = complete(url, prompt="ROMEO:", max_tokens=120, temperature=1.0, seed=7)
    assert whole["object"] == "text_completion" and whole["seed"] == 7
    assert whole["choices"] == [
        {"text": expected, "index": 0, "logprobs": None, "finish_reason": "length"}
    ]
    assert whole["usage"] == {"prompt_tokens": 6, "completion_tokens": 120, "total_tokens": 126}

    events, last = stream(url, prompt="ROMEO:", max_tokens=120, temperature=1.0, seed=7)
    assert last == "data: [DONE]" and texts(events) == [expected]
    assert [e["choices"][0]["finish_reason"] for e in events][-1] == "length"
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])
    assert len({e["id"] for e in events}) == 1 and events[0]["model"] == "tiny"

    # n samples are `sample -N n` with the same seed; top_p and greedy pass through
    lines = cli_sample(runs / "tiny", "--seed", "3", "--prime", "JULIET:", "--length", "50",
                       "-N", "3", "--json", "--top-p", "0.9")  # fmt: skip
    expected_n = [json.loads(line)["text"][len("JULIET:") :] for line in lines.splitlines()]
    got = complete(url, prompt="JULIET:", max_tokens=50, n=3, seed=3, top_p=0.9)
    assert [c["text"] for c in got["choices"]] == expected_n and len(set(expected_n)) == 3
    events, _ = stream(url, prompt="JULIET:", max_tokens=50, n=3, seed=3, top_p=0.9)
    assert texts(events, 3) == expected_n
    greedy = cli_sample(runs / "tiny", "--greedy", "--length", "40", "--no-echo-prime")
    assert complete(url, max_tokens=40, temperature=0)["choices"][0]["text"] == greedy
    # a prompt longer than a prefill window (it runs through the model in two windows)
    long = PLAY[:300]
    expected = cli_sample(runs / "tiny", "--seed", "4", "--prime", long, "--length", "60",
                          "--no-echo-prime")  # fmt: skip
    got = complete(url, prompt=long, max_tokens=60, seed=4)
    assert got["choices"][0]["text"] == expected and got["usage"]["prompt_tokens"] == 300


def test_stop_strings_end_a_sample_and_are_not_sent(url: str) -> None:
    free = complete(url, prompt="ROMEO:", max_tokens=200, seed=11)["choices"][0]["text"]
    stop = free[30:33]  # three characters the sample holds: they span several steps
    cut = free[: free.index(stop)]
    got = complete(url, prompt="ROMEO:", max_tokens=200, seed=11, stop=[stop, "never seen"])
    assert got["choices"][0] == {"text": cut, "index": 0, "logprobs": None,
                                 "finish_reason": "stop"}  # fmt: skip
    events, _ = stream(url, prompt="ROMEO:", max_tokens=200, seed=11, stop=stop)
    assert texts(events) == [cut] and events[-1]["choices"][0]["finish_reason"] == "stop"
    # n rows end separately; each is its own sample cut at its own stop
    whole = complete(url, max_tokens=100, n=4, seed=5)["choices"]
    stopped = complete(url, max_tokens=100, n=4, seed=5, stop="\n")["choices"]
    for a, b in zip(whole, stopped, strict=True):
        assert b["text"] == a["text"].split("\n")[0]
        assert b["finish_reason"] == ("stop" if "\n" in a["text"] else "length")


def test_clients_joining_at_different_moments_get_their_own_text(url: str) -> None:
    a_alone = complete(url, prompt="ROMEO:", max_tokens=3000, seed=1)["choices"][0]["text"]
    b_alone = complete(url, prompt="JULIET:", max_tokens=200, seed=2, temperature=1.3, n=2)
    b_alone = [c["text"] for c in b_alone["choices"]]
    a_text, a_after_b = [], 0
    b_started = threading.Event()
    payload = {"model": "tiny", "prompt": "ROMEO:", "max_tokens": 3000, "seed": 1, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=payload, timeout=T) as r:
        lines = r.iter_lines()
        for line in lines:  # a few pieces of A first
            if line.startswith("data: {"):
                a_text.append(json.loads(line[6:])["choices"][0]["text"])
                break
        b = {}
        thread = threading.Thread(
            target=lambda: (
                b_started.set(),
                b.update(
                    complete(url, prompt="JULIET:", max_tokens=200, seed=2, temperature=1.3, n=2)
                ),
            )
        )
        thread.start()
        b_started.wait(T)
        for line in lines:
            if line.startswith("data: {"):
                a_text.append(json.loads(line[6:])["choices"][0]["text"])
                a_after_b += thread.is_alive() is False
        thread.join(T)
    assert "".join(a_text) == a_alone
    assert [c["text"] for c in b["choices"]] == b_alone
    assert a_after_b > 0  # A was still streaming when B had finished: they shared the batch


def test_the_engine_gives_each_job_its_own_text_whenever_it_joins(models: dict) -> None:
    """Jobs joining a running batch at chosen steps, with other options, n, stop strings and
    a cancelled neighbour, each get exactly what they get alone."""
    model = models["tiny"]

    def job(seed: int, **kw) -> Job:
        prompt = kw.pop("prompt", "ROMEO:")
        cfg = SampleConfig(length=kw.pop("length", 60), temperature=kw.pop("temperature", 0.8),
                           top_k=kw.pop("top_k", 0), top_p=kw.pop("top_p", 1.0))  # fmt: skip
        return Job("tiny", model.encode_prime(prompt), cfg, seed, **kw)

    specs = [dict(seed=1, length=150), dict(seed=2, n=3, prompt="JULIET:\nO", temperature=1.2),
             dict(seed=3, top_k=5, length=40), dict(seed=4, stop=("e",), n=2),
             dict(seed=5, top_p=0.5, prompt=""), dict(seed=6, prompt=PLAY[:40], n=2)]  # fmt: skip

    def run(jobs_at: dict[int, list[Job]], cancel_at: dict[int, Job] | None = None) -> dict:
        engine = Engine({"tiny": model}, max_batch=16, publish_every=0)  # publish every step
        out: dict[Job, list] = {}
        done = threading.Event()
        pending = {job for group in jobs_at.values() for job in group}

        def publish(updates) -> None:
            for job, events in updates:
                out.setdefault(job, []).extend(events)
                if job.live == 0:
                    pending.discard(job)
            for step, group in jobs_at.items():  # (publish comes after each step with text)
                for job in group:
                    if engine.steps >= step and job not in submitted:
                        submitted.add(job)
                        engine.submit(job)
            for step, job in (cancel_at or {}).items():
                if engine.steps >= step and not job.cancelled:
                    engine.cancel(job)
                    pending.discard(job)
            if not pending:
                done.set()

        submitted = set(jobs_at.get(0, []))
        engine.start(publish)
        for job in jobs_at.get(0, []):
            engine.submit(job)
        assert done.wait(T)
        engine.stop()
        assert not engine.errors and engine.stats()["rows"] == 0
        result = {}
        for job, events in out.items():
            text = [""] * job.n
            for e in events:
                if isinstance(e, Text):
                    text[e.index] += e.text
                assert not isinstance(e, Failed)
            result[job.seed] = (text, [e.reason for e in events if isinstance(e, Done)])
        return result

    alone = {}
    for spec in specs:
        alone.update(run({0: [job(**spec)]}))
    leaves = job(seed=9, length=10_000)  # its client goes away at step 30
    together = run({0: [job(**specs[0]), leaves], 3: [job(**specs[1])],
                    4: [job(**specs[2]), job(**specs[3])], 20: [job(**specs[4]), job(**specs[5])]},
                   cancel_at={30: leaves})  # fmt: skip
    for spec in specs:
        assert together[spec["seed"]] == alone[spec["seed"]], spec
    assert "stop" in alone[4][1]  # the stop string did end a row
    # and n rows are `samples(n)`, as sample -N n
    assert alone[2][0] == model.samples(3, "JULIET:\nO", length=60, seed=2, temp=1.2)


# ----------------------------------------------------------------------------------- clients


def test_a_client_that_leaves_frees_its_row_at_once(url: str) -> None:
    payload = {"model": "tiny", "prompt": "ROMEO:", "max_tokens": LONG, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=payload, timeout=T) as r:
        lines = r.iter_lines()  # (kept: a dropped iterator closes the connection)
        next(line for line in lines if line.startswith("data: {"))
        assert rows(url, want=1) == 1
    assert rows(url) == 0  # closed mid-stream: gone within moments, not after LONG tokens
    # a whole (unstreamed) request whose client hangs up
    port = int(url.rsplit(":", 1)[1])
    for n in (1, 4):
        body = json.dumps({"model": "tiny", "max_tokens": LONG, "n": n}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=T) as s:
            head = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n")
            s.sendall(head % len(body) + body)
            assert rows(url, want=n) == n
        assert rows(url) == 0
    # the server goes on as before
    assert complete(url, max_tokens=5)["choices"][0]["finish_reason"] == "length"


BAD = [
    ("POST", "/v1/completions", b"{", 400),
    ("POST", "/v1/completions", b"", 400),
    ("POST", "/v1/completions", b"\xff\xfe\x00", 400),
    ("POST", "/v1/completions", b"[]", 400),
    ("POST", "/v1/completions", b"null", 400),
    ("POST", "/v1/completions", b"[" * 100_000 + b"]" * 100_000, 400),
    ("POST", "/v1/completions", {"prompt": 5}, 400),
    ("POST", "/v1/completions", {"prompt": []}, 400),
    ("POST", "/v1/completions", {"prompt": ["a", 5]}, 400),
    ("POST", "/v1/completions", {"max_tokens": "5"}, 400),
    ("POST", "/v1/completions", {"max_tokens": -1}, 400),
    ("POST", "/v1/completions", {"max_tokens": 0}, 400),
    ("POST", "/v1/completions", {"max_tokens": LONG + 1}, 400),
    ("POST", "/v1/completions", {"max_tokens": 10**30}, 400),
    ("POST", "/v1/completions", {"max_tokens": 2.5}, 400),
    ("POST", "/v1/completions", {"temperature": -0.1}, 400),
    ("POST", "/v1/completions", b'{"temperature": NaN}', 400),
    ("POST", "/v1/completions", b'{"temperature": 1e999}', 400),
    ("POST", "/v1/completions", {"top_p": 0}, 400),
    ("POST", "/v1/completions", {"top_p": 1.5}, 400),
    ("POST", "/v1/completions", {"top_k": -3}, 400),
    ("POST", "/v1/completions", {"n": 0}, 400),
    ("POST", "/v1/completions", {"n": 33}, 400),
    ("POST", "/v1/completions", {"n": True}, 400),
    ("POST", "/v1/completions", {"seed": -1}, 400),
    ("POST", "/v1/completions", {"seed": 2**64}, 400),
    ("POST", "/v1/completions", {"stream": "yes"}, 400),
    ("POST", "/v1/completions", {"stop": ""}, 400),
    ("POST", "/v1/completions", {"stop": ["a", "b", "c", "d", "e"]}, 400),
    ("POST", "/v1/completions", {"stop": [1]}, 400),
    ("POST", "/v1/completions", {"stop": "x" * 1000}, 400),
    ("POST", "/v1/completions", {"logprobs": 6}, 400),
    ("POST", "/v1/completions", {"logprobs": -1}, 400),
    ("POST", "/v1/completions", {"echo": "yes"}, 400),
    ("POST", "/v1/chat/completions", {}, 400),
    ("POST", "/v1/chat/completions", {"messages": []}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "bot", "content": "x"}]}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user"}], "max_tokens": 0}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user"}], "top_logprobs": 2}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user"}], "logprobs": True,
                                      "top_logprobs": 21}, 400),  # fmt: skip
    ("GET", "/v1/chat/completions", None, 405),
    ("POST", "/v1/completions", {"on_unknown": "maybe"}, 400),
    ("POST", "/v1/completions", {"prompt": "ROMEO: \u00e9\u4e2d"}, 400),
    ("POST", "/v1/completions", {"prompt": "R" * 20_000}, 400),
    ("POST", "/v1/completions", {"model": "nope"}, 404),
    ("POST", "/v1/completions", {"model": None}, 400),  # two models served: name one
    ("POST", "/v1/completions", {"model": "../../etc/passwd"}, 404),
    ("POST", "/v1/completions", b'{"prompt": "' + b"a" * (MAX_BODY + 10) + b'"}', 413),
    ("POST", "/v1/completions", b"x" * (10 << 20), 413),
    ("GET", "/v1/completions", None, 405),
    ("POST", "/v1/models", None, 405),
    ("GET", "/nowhere", None, 404),
    ("GET", "/../../etc/passwd", None, 404),
    ("POST", "/score", {"text": "R"}, 400),
    ("POST", "/score", {"text": 5}, 400),
    ("POST", "/score", {}, 400),
    ("POST", "/score", {"text": "a" * 300_000}, 400),
    ("POST", "/score", {"model": "nope", "text": "ROMEO:\n"}, 404),
]


def test_every_malformed_request_gets_a_4xx_with_a_json_error(url: str) -> None:
    with httpx.Client(timeout=T) as client:
        for method, path, body, status in BAD:
            if isinstance(body, dict):
                body = json.dumps({"model": "tiny", **body}).encode()
            r = client.request(method, url + path, content=body, headers=JSON)
            assert r.status_code == status, (path, body and body[:80], r.text)
            error = r.json()["error"]
            assert error["message"] and error["type"], error
    # a client that says it sends 10 MB is answered before it has sent them
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=T) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                  b"application/json\r\nContent-Length: %d\r\n\r\n{" % (10 << 20))  # fmt: skip
        assert s.recv(1000).startswith(b"HTTP/1.1 413 ")
    assert rows(url) == 0
    ok = complete(url, prompt="ROMEO: \u00e9", on_unknown="skip", max_tokens=3)
    assert ok["usage"]["prompt_tokens"] == 7  # "ROMEO: " read, the é skipped


def test_models_health_and_score(url: str, models: dict) -> None:
    listed = httpx.get(f"{url}/v1/models", timeout=T).json()
    assert [m["id"] for m in listed["data"]] == ["tiny", "other"]
    health = httpx.get(f"{url}/health", timeout=T).json()
    assert (
        health["status"] == "ok" and health["rows"] == 0 and health["models"] == ["tiny", "other"]
    )
    text = "ROMEO:\nBut soft, what light\nJULIET:\n"
    r = httpx.post(f"{url}/score", json={"model": "other", "text": text}, timeout=T)
    assert r.status_code == 200
    # "tokens" counts what is scored (all but the first token), as `evaluate --json` does
    scored = models["other"].evaluate(text).tokens
    assert r.json()["tokens"] == scored == sum(line["tokens"] for line in r.json()["lines"])
    assert r.json()["lines"] == models["other"].score_lines(text)
    assert [line["line"] for line in r.json()["lines"]] == ["ROMEO:", "But soft, what light",
                                                            "JULIET:"]  # fmt: skip
    assert complete(url, model="other", max_tokens=3)["model"] == "other"


def test_a_subword_model_streams_whole_characters(runs: Path) -> None:
    """A byte-level BPE model: pieces split inside a character are held back, so the streamed
    pieces join to `Model.generate`'s text, and n samples are `Model.samples`."""
    corpus = runs.parent / "accents.txt"
    corpus.write_text(
        PLAY + "Caf\u00e9 na\u00efve \u2014 \U0001f339 r\u00f4le.\n" * 40, encoding="utf-8"
    )
    charlstm.train([str(corpus)], steps=15, name="sub", checkpoints=runs, tokenizer="bpe",
                   vocab_size=300, **TINY)  # fmt: skip
    model = load_models([runs / "sub"])["sub"]
    expected = "".join(model.generate("Caf", length=80, seed=6, temp=1.2))
    with serving({"sub": model}) as base:
        events, _ = stream(base, model="sub", prompt="Caf", max_tokens=80, seed=6, temperature=1.2)
        assert texts(events) == [expected]
        got = complete(base, model="sub", prompt="Caf", max_tokens=30, seed=8, n=3)
        assert [c["text"] for c in got["choices"]] == model.samples(3, "Caf", length=30, seed=8)
        assert got["usage"]["prompt_tokens"] == len(model.encode_prime("Caf"))


def test_a_full_queue_answers_503_with_retry_after(models: dict) -> None:
    with serving({"tiny": models["tiny"]}, max_batch=2, queue=1) as base:
        payload = {"prompt": "ROMEO:", "max_tokens": LONG, "stream": True}
        with contextlib.ExitStack() as streams:
            for _ in range(2):  # a row each
                r = streams.enter_context(httpx.stream("POST", f"{base}/v1/completions",
                                                       json=payload, timeout=T))  # fmt: skip
                assert r.status_code == 200
            waiting = threading.Thread(
                target=lambda: httpx.post(
                    f"{base}/v1/completions", json={"max_tokens": 1}, timeout=T
                )
            )
            waiting.start()  # waits in the queue for a row
            assert rows(base, want=3) == 3
            r = httpx.post(f"{base}/v1/completions", json={"max_tokens": 1}, timeout=T)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "queue_full"
            assert httpx.post(f"{base}/v1/completions", json={"n": 3}, timeout=T).status_code == 400
        waiting.join(T)  # the streams closed: the queued request got its row and finished
        assert not waiting.is_alive() and rows(base) == 0


def test_the_api_key_is_required_on_every_request(models: dict) -> None:
    with serving({"tiny": models["tiny"]}, api_key="s3cret") as base:
        for path in ("/health", "/v1/models", "/v1/completions", "/score", "/nowhere"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                r = httpx.post(base + path, headers=headers, json={}, timeout=T)
                assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        key = {"Authorization": "Bearer s3cret"}
        assert httpx.get(f"{base}/health", headers=key, timeout=T).status_code == 200
        r = httpx.post(f"{base}/v1/completions", headers=key, json={"max_tokens": 4}, timeout=T)
        assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 4


# ------------------------------------------------------------------------------- hostile clients


def _closed(s: socket.socket) -> bytes:
    """What the server sends on `s` until it closes the connection (T seconds at most)."""
    s.settimeout(T)
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := s.recv(65536):
            got += chunk
    return got


def test_slow_endless_and_vanishing_clients_are_cut_off(models: dict) -> None:
    """Before any check of the request: a client that sends its headers too slowly or without
    end is answered 408 or 431 and cut off (uvicorn kept both forever, buffering the headers);
    a body that does not arrive in time is a 408; a client that leaves mid-body is one 499
    line, not a 500 with tracebacks. The server then answers as before."""
    events = []
    with serving({"tiny": models["tiny"]}, report=lambda e, d: events.append((e, d)),
                 head_timeout=0.5, body_timeout=0.5, api_key="k") as base:  # fmt: skip
        port = int(base.rsplit(":", 1)[1])
        address = ("127.0.0.1", port)
        quiet = [socket.create_connection(address, timeout=T) for _ in range(10)]
        slow = [socket.create_connection(address, timeout=T) for _ in range(10)]
        t0 = time.monotonic()
        for s in slow:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        with contextlib.suppress(OSError):  # a header line every 0.1 s, until the server cuts
            for i in range(30):
                for s in slow:
                    s.sendall(b"X-%d: slow\r\n" % i)
                time.sleep(0.1)
        for s in quiet + slow:
            reply = _closed(s)
            assert reply.startswith(b"HTTP/1.1 408 "), reply[:100]
            assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
            s.close()
        assert time.monotonic() - t0 < T
        # headers without end: 431 once they pass MAX_HEAD, long before they end
        with socket.create_connection(address, timeout=T) as s:
            sent = 0
            with contextlib.suppress(OSError):
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
                while sent < 64 * MAX_HEAD:
                    s.sendall(b"a" * 16384)
                    sent += 16384
            assert _closed(s).startswith(b"HTTP/1.1 431 ")
        # a body that does not come: 408 from the app, and the connection closes
        with socket.create_connection(address, timeout=T) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                      b"Bearer k\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
                      b"\r\n{")  # fmt: skip
            assert _closed(s).startswith(b"HTTP/1.1 408 ")
        # a body nobody reads (refused for its key) that does not come: closed soon after
        with socket.create_connection(address, timeout=T) as s:
            s.sendall(b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
            assert _closed(s).startswith(b"HTTP/1.1 401 ")
        # a client that leaves mid-body
        events.clear()
        for path in (b"/v1/completions", b"/score"):
            with socket.create_connection(address, timeout=T) as s:
                s.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer k\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"pr"
                          % path)  # fmt: skip
                time.sleep(0.1)
        deadline = time.monotonic() + T
        while len(events) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [(e, d["status"]) for e, d in events] == [("request", 499)] * 2, events
        key = {"Authorization": "Bearer k"}
        r = httpx.post(f"{base}/v1/completions", json={"max_tokens": 3}, headers=key, timeout=T)
        assert r.status_code == 200


def test_foreign_hosts_pages_and_bodies_that_are_not_json_are_refused(models: dict) -> None:
    """A web page cannot drive a local server: a Host that does not name it (DNS rebinding), an
    Origin it does not allow and a body that is not JSON (a form, text/plain: what a page may
    send without asking) are refused with JSON errors; the pages and names the user allows get
    through, with CORS headers."""
    payload = json.dumps({"max_tokens": 2}).encode()
    with serving({"tiny": models["tiny"]}) as base:
        port = int(base.rsplit(":", 1)[1])

        def post(path="/v1/completions", body=payload, **headers) -> httpx.Response:
            headers = {"Content-Type": "application/json", **headers}
            return httpx.post(base + path, content=body, headers=headers, timeout=T)

        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}",
                     f"127.0.0.1:{port + 1}", "localhost:x"):  # fmt: skip
            r = post(Host=host, **{"Content-Type": "text/plain"})
            assert r.status_code == 403, (host, r.text)
            assert r.json()["error"]["code"] == "host_not_allowed"
        for origin in ("http://evil.example", f"http://evil.example:{port}", "null",
                       f"http://localhost:{port + 1}", f"https://127.0.0.1:{port}"):  # fmt: skip
            r = post(Origin=origin)
            assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
            assert "access-control-allow-origin" not in r.headers
        forms = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None)
        for kind in forms:
            for path in ("/v1/completions", "/score"):
                headers = {} if kind is None else {"Content-Type": kind}
                r = httpx.post(base + path, content=payload, headers=headers, timeout=T)
                assert r.status_code == 415, (kind, r.text)
                assert r.json()["error"]["code"] == "unsupported_media_type"
        for host in ("127.0.0.1", f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}",
                     "LOCALHOST"):  # fmt: skip
            assert post(Host=host).status_code == 200, host
        own = post(Origin=f"http://127.0.0.1:{port}")  # the server's own origin
        assert own.status_code == 200 and "access-control-allow-origin" not in own.headers
        assert rows(base) == 0
    allowed = "http://localhost:3000"
    with serving({"tiny": models["tiny"]}, api_key="k", allow_origins=(allowed,),
                 allow_hosts=("box.lan",)) as base:  # fmt: skip
        port = int(base.rsplit(":", 1)[1])
        key = {"Authorization": "Bearer k", "Content-Type": "application/json"}
        r = httpx.post(f"{base}/v1/completions", content=payload, timeout=T,
                       headers={**key, "Origin": allowed, "Host": f"box.lan:{port}"})  # fmt: skip
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == allowed
        ask = {"Origin": allowed, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization, content-type"}  # fmt: skip
        r = httpx.options(f"{base}/v1/completions", headers=ask, timeout=T)  # a preflight: no key
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == allowed
        assert "Authorization" in r.headers["access-control-allow-headers"]
        r = httpx.post(f"{base}/v1/completions", content=payload, headers={**key,
                       "Origin": "http://localhost:3001"}, timeout=T)  # fmt: skip
        assert r.status_code == 403
    # listening on every address: any IP address names it, still no foreign name
    with serving({"tiny": models["tiny"]}, host="0.0.0.0") as base:
        port = int(base.rsplit(":", 1)[1])
        for host, status in ((f"192.168.1.20:{port}", 200), (f"[fe80::1]:{port}", 200),
                             (f"box.lan:{port}", 403)):  # fmt: skip
            r = httpx.post(f"{base}/v1/completions", content=payload, timeout=T,
                           headers={"Content-Type": "application/json", "Host": host})
            assert r.status_code == status, host


# ----------------------------------------------------------------------------------- the process


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigint_and_sigterm_cut_the_streams_and_exit_0(runs: Path, sig: int) -> None:
    """The command line: the key from the environment, port 0 reported, a stream cut cleanly
    after the grace time, one log line per request, status 0."""
    env = {**os.environ, "CHARLSTM_API_KEY": "k"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlstm", "serve", str(runs / "tiny"), "--port", "0",
         "--threads", "1", "--grace", "0.3", "--max-tokens", str(LONG)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "listening on" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        assert "listening on http://127.0.0.1:" in line, line
        base = line.split()[2]
        key = {"Authorization": "Bearer k"}
        assert httpx.get(f"{base}/health", timeout=T).status_code == 401
        payload = {"prompt": "ROMEO:", "max_tokens": LONG, "stream": True}
        with httpx.stream("POST", f"{base}/v1/completions", json=payload, headers=key,
                          timeout=T) as r:  # fmt: skip
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: {"))
            t0 = time.monotonic()
            proc.send_signal(sig)
            rest = [line for line in lines if line.startswith("data: ")]
            cut_after = time.monotonic() - t0
        assert rest[-1] == "data: [DONE]" and "shutting down" in rest[-2]
        assert 0.2 < cut_after < 5
        out, err = proc.communicate(timeout=T)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == "" and "Traceback" not in err
    assert "401 GET /health" in err and "200 POST /v1/completions tiny" in err


@pytest.mark.parametrize("moment", ["loaded", "twice-mid-stream", "thrice", "while-exiting"])
def test_signals_at_any_moment_exit_0_without_a_traceback(runs: Path, moment: str) -> None:
    """SIGINT or SIGTERM whenever it comes: as soon as the models are loaded (before the server
    listens), twice 50 ms apart in a stream (as `timeout` sends them: to the process, then to
    its group; uvicorn skipped the app's shutdown on the second and a CancelledError traceback
    followed), three in a row just after it listens, or more while the stopped process exits
    (Python had reset the handlers: the process died by the signal). Always status 0, no
    traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlstm", "serve", str(runs / "tiny"), "--port", "0",
         "--threads", "1", "--grace", "0.3", "--max-tokens", str(LONG)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for = "model tiny:" if moment == "loaded" else "listening on"
        line, deadline = "", time.monotonic() + 60
        while wait_for not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        assert wait_for in line, line
        if moment == "loaded":
            proc.send_signal(signal.SIGTERM)
        elif moment == "thrice":
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
                proc.send_signal(sig)
        elif moment == "while-exiting":
            proc.send_signal(signal.SIGTERM)
            while "stopped" not in line and time.monotonic() < deadline:
                line = proc.stderr.readline()
            assert "stopped" in line
            while proc.poll() is None and time.monotonic() < deadline:
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.02)
        else:
            payload = {"prompt": "ROMEO:", "max_tokens": LONG, "stream": True}
            with httpx.stream("POST", f"{line.split()[2]}/v1/completions", json=payload,
                              timeout=T) as r:  # fmt: skip
                lines = r.iter_lines()
                next(line for line in lines if line.startswith("data: {"))
                proc.send_signal(signal.SIGINT)
                time.sleep(0.05)
                proc.send_signal(signal.SIGINT)
                assert [line for line in lines if line.startswith("data: ")][-1] == "data: [DONE]"
        out, err = proc.communicate(timeout=T)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == "" and "Traceback" not in err and "Error" not in err, err
