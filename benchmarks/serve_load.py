"""Load test of `charlstm serve` (issue #19): many streaming clients sharing one batched step.

    python benchmarks/serve_load.py                        # the figures (a 2×512 run, trained
                                                           # for 30 steps first, ~4 minutes)
    python benchmarks/serve_load.py --run checkpoints/big  # an existing run
    python benchmarks/serve_load.py --run R --repeats 1 --seconds 3 --requests 100   # smoke

It starts `charlstm serve RUN --port 0 --threads T` as a subprocess on 127.0.0.1 and, in one
run, side by side:

1. Throughput, alternating for --repeats rounds: one streaming client, then --clients (32)
   concurrent streaming clients, each sending requests of --tokens characters back to back for
   --seconds; characters received per second, all clients together. Against it, in each round,
   `charlstm sample -N 32` (the library call it makes, `Model.samples`, in a fresh process on
   the same threads, timed after loading). Medians over the rounds, and the ratios.
2. Time to first token under the many-client load: p50, p99 over every request of every
   round, as the clients see it (request sent → first text received) and as the server logs
   it (request read → first token ready to send).
3. Faults: --requests (1,000) requests, --clients at a time, a fixed mix of good ones (streamed
   and whole, n = 2), malformed ones (bad JSON, wrong types, out-of-range options, an unknown
   model, a 2 MB body, a wrong method) and clients that disconnect mid-stream or before their
   answer. Counted: responses by status, 5xx (must be 0), rows still live once the server is
   idle (/health: must be 0), the server's resident memory before and after (VmRSS). The mix
   also holds requests a hostile client or web page sends (issue #27): a text/plain body, a
   foreign Host, a foreign Origin, and a client that hangs up mid-body.
4. Hostile connections, each bounded: --slow (200) slowloris connections sending a header line
   a second, and --big-headers (30) sending endless headers (up to 8 MB each): seconds until
   the server cut each one (must be within seconds), what it answered, and its resident memory
   before, at its peak meanwhile, and after.

`--faults-only` skips 1 and 2 (a quick check of 3 and 4).

The load generator (async httpx) runs on the same machine and takes CPU from the server: on a
2-core machine the server gets one thread (--threads 1) and the clients the other core.
Every loop is bounded in count and time, and talks only to the server it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

CORPUS = (
    Path(__file__).resolve().parent.parent.parent / "shared" / "corpora" / "tinyshakespeare.txt"
)
PROMPTS = ["ROMEO:", "JULIET:\n", "First Citizen:\n", "KING HENRY", "O, ", "\n", "To be"]


def start_server(run: Path, threads: int, clients: int) -> tuple[subprocess.Popen, str, list]:
    """The server, its address, and its stderr lines as they come (read by a thread)."""
    cmd = [sys.executable, "-m", "charlstm", "serve", str(run), "--port", "0", "--threads",
           str(threads), "--max-batch", str(max(32, clients))]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("listening on "):
            url = line.split()[2]
            break
    else:
        raise SystemExit(f"the server ended with status {proc.wait()}")
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
    return proc, url, log


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ----------------------------------------------------------------------------------- throughput


async def one_client(client: httpx.AsyncClient, url: str, k: int, tokens: int, until: float,
                     ttft: list[float]) -> int:  # fmt: skip
    """Streamed requests back to back until `until`; the characters received."""
    chars, i = 0, 0
    while time.perf_counter() < until:
        body = {"prompt": PROMPTS[(k + i) % len(PROMPTS)], "max_tokens": tokens, "stream": True,
                "seed": k * 100_003 + i}  # fmt: skip
        i += 1
        t0 = time.perf_counter()
        first = True
        try:
            async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    text = json.loads(line[6:])["choices"][0]["text"]
                    if first and text:
                        ttft.append(time.perf_counter() - t0)
                        first = False
                    chars += len(text)
                    if time.perf_counter() >= until:
                        break  # the window is over: hang up
        except httpx.TransportError:
            pass
    return chars


async def throughput(url: str, clients: int, tokens: int, seconds: float) -> tuple[float, list]:
    ttft: list[float] = []
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        until = t0 + seconds
        counts = await asyncio.gather(
            *(one_client(client, url, k, tokens, until, ttft) for k in range(clients))
        )
        elapsed = time.perf_counter() - t0
    return sum(counts) / elapsed, ttft


def sample_n(run: Path, n: int, length: int, threads: int) -> tuple[float, float]:
    """Characters per second of `charlstm sample -N n` (its library call) after loading, and
    per second of the process's CPU time."""
    code = (
        "import time; from charlstm.api import load; from charlstm.device import set_threads;"
        f"set_threads({threads}); m = load({str(run)!r}); m.samples({n}, 'ROMEO:', length=20);"
        "t, c = time.perf_counter(), time.process_time();"
        f"m.samples({n}, 'ROMEO:', length={length}, seed=1); chars = {n} * {length};"
        "print(chars / (time.perf_counter() - t), chars / (time.process_time() - c))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=600).stdout.split()  # fmt: skip
    return float(out[0]), float(out[1])


# ----------------------------------------------------------------------------------- faults

BAD_BODIES = [
    b"{",
    b'{"max_tokens": -5}',
    b'{"max_tokens": "ten"}',
    b'{"top_p": 5}',
    b'{"temperature": -1}',
    b'{"model": "nope"}',
    b'{"n": 1000}',
    b'{"stop": ["a", "b", "c", "d", "e"]}',
    b"[" * 5000,
    b'{"prompt": "' + b"x" * (2 << 20) + b'"}',
]


async def fault(client: httpx.AsyncClient, url: str, i: int) -> str:
    """Request i of the mix; returns the status, or what happened to it."""
    kind = i % 8
    try:
        if kind in (0, 1):  # good, streamed
            body = {"prompt": "ROMEO:", "max_tokens": 40, "stream": True, "seed": i}
            async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
                async for _ in r.aiter_lines():
                    pass
                return str(r.status_code)
        if kind == 2:  # good, whole, two samples
            body = {"prompt": "JULIET:", "max_tokens": 40, "n": 2, "stop": "\n\n", "seed": i}
            return str((await client.post(f"{url}/v1/completions", json=body)).status_code)
        if kind in (3, 4):  # malformed
            content = BAD_BODIES[i % len(BAD_BODIES)]
            r = await client.post(f"{url}/v1/completions", content=content, headers=JSON)
            return str(r.status_code)
        if kind == 5:  # a wrong method or path, or what a hostile page or client sends
            j = (i // 8) % 6
            if j < 3:
                path = ("/v1/completions", "/nowhere", "/score")[j]
                return str((await client.get(url + path)).status_code)
            if j == 3:  # a page's text/plain POST, from a foreign origin through a foreign name
                headers = {"Content-Type": "text/plain", "Host": "evil.example",
                           "Origin": "http://evil.example"}  # fmt: skip
                body = b'{"max_tokens": 5}'
                r = await client.post(f"{url}/v1/completions", content=body, headers=headers)
                return str(r.status_code)
            if j == 4:
                r = await client.post(f"{url}/v1/completions", content=b'{"max_tokens": 5}',
                                      headers={"Content-Type": "text/plain"})  # fmt: skip
                return str(r.status_code)
            return await mid_body(url)
        if kind == 6:  # leaves mid-stream
            body = {"prompt": "ROMEO:", "max_tokens": 4000, "stream": True}
            async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        break
                return "left mid-stream"
        # kind 7: leaves before its (whole) answer
        body = {"prompt": "ROMEO:", "max_tokens": 4000}
        task = asyncio.ensure_future(client.post(f"{url}/v1/completions", json=body))
        await asyncio.sleep(0.02)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "left before the answer"
        return str(task.result().status_code)
    except httpx.TransportError as e:
        return f"transport error {type(e).__name__}"


JSON = {"Content-Type": "application/json"}


def _address(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    return host.strip("[]"), int(port)


async def mid_body(url: str) -> str:
    """A client that sends its headers and part of its body, then hangs up."""
    reader, writer = await asyncio.open_connection(*_address(url))
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                 b"application/json\r\nContent-Length: 1000\r\n\r\n{\"prompt\": \"RO")  # fmt: skip
    await writer.drain()
    await asyncio.sleep(0.02)
    writer.close()
    return "left mid-body"


async def hostile(url: str, slow: int, big: int, seconds: float, pid: int) -> dict:
    """`slow` slowloris connections (a header line a second) and `big` ones sending endless
    headers (64 KB at a time, 8 MB at most), all at once, for `seconds` at most: when the
    server cut each, what it answered, and its memory meanwhile."""
    address = _address(url)
    t0 = time.perf_counter()
    until = t0 + seconds
    cut: dict[str, list[float]] = {"slow": [], "big": []}
    answers: dict[str, int] = {}
    peak = [rss_mb(pid)]

    async def client(kind: str) -> None:
        reader, writer = await asyncio.open_connection(*address)
        head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        writer.write(head if kind == "slow" else head + b"X-Big: ")
        reply = asyncio.ensure_future(reader.read())  # until the server closes
        sent, i = 0, 0
        try:
            while not reply.done() and time.perf_counter() < until:
                if kind == "slow":
                    writer.write(b"X-%d: slow\r\n" % i)
                    i += 1
                elif sent < 8 << 20:
                    writer.write(b"a" * 65536)
                    sent += 65536
                try:
                    await writer.drain()
                except OSError:
                    break
                await asyncio.wait([reply], timeout=1.0 if kind == "slow" else 0.01)
            try:
                got = await asyncio.wait_for(reply, max(0.0, until - time.perf_counter()))
                status = got.split(b" ", 2)[1].decode() if got.startswith(b"HTTP/") else "closed"
            except asyncio.TimeoutError:
                status = "still open"
            except OSError:  # the server reset the connection (still sending: that ends here)
                status = "reset"
            if status != "still open":
                cut[kind].append(time.perf_counter() - t0)
            answers[f"{kind} {status}"] = answers.get(f"{kind} {status}", 0) + 1
        finally:
            reply.cancel()
            writer.close()

    async def watch() -> None:
        while time.perf_counter() < until:
            peak.append(rss_mb(pid))
            await asyncio.sleep(0.2)

    before = rss_mb(pid)
    watcher = asyncio.ensure_future(watch())
    await asyncio.gather(*(client("slow") for _ in range(slow)),
                         *(client("big") for _ in range(big)))  # fmt: skip
    watcher.cancel()
    return {"slow": slow, "big": big, "answers": answers,
            "slow_cut_max_s": max(cut["slow"], default=float("nan")),
            "big_cut_max_s": max(cut["big"], default=float("nan")),
            "rss_before_mb": before, "rss_peak_mb": max(peak),
            "rss_after_mb": rss_mb(pid)}  # fmt: skip


async def faults(url: str, requests: int, clients: int, seconds: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    queue = iter(range(requests))

    async def worker() -> None:
        # A fresh connection pool per worker: a cancelled request drops its connection.
        async with httpx.AsyncClient(timeout=30) as client:
            for i in queue:
                status = await fault(client, url, i)
                counts[status] = counts.get(status, 0) + 1

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(clients))), seconds)
    return counts


def idle_rows(url: str, within: float = 10.0) -> int:
    deadline = time.monotonic() + within
    while True:
        h = httpx.get(f"{url}/health", timeout=10).json()
        live = h["rows"] + h["prefilling"] + h["queued"]
        if live == 0 or time.monotonic() > deadline:
            return live
        time.sleep(0.1)


# ----------------------------------------------------------------------------------- main


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, help="run folder (default: train a 2×512 for 30 steps)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=200, help="max_tokens of each request")
    ap.add_argument("--seconds", type=float, default=15.0, help="each throughput window")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sample-length", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--slow", type=int, default=200, help="slowloris connections")
    ap.add_argument("--big-headers", type=int, default=30, help="endless-header connections")
    ap.add_argument("--faults-only", action="store_true", help="skip the throughput rounds")
    ap.add_argument("--json", action="store_true", help="also one JSON line with every figure")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            subprocess.run([sys.executable, "-m", "charlstm", "train", str(CORPUS), "--hidden",
                            "512", "--layers", "2", "--steps", "30", "--threads", "1", "--name",
                            "big", "--checkpoints", tmp, "--quiet"], check=True)  # fmt: skip
            run = Path(tmp) / "big"
        proc, url, log = start_server(run, args.threads, args.clients)
        try:
            asyncio.run(throughput(url, 2, 50, 1.0))  # warm-up
            one, many, sampled, ttft, many_cpu, sampled_cpu = [], [], [], [], [], []
            server_ttft: list[float] = []
            for r in range(0 if args.faults_only else args.repeats):
                one.append(asyncio.run(throughput(url, 1, args.tokens, args.seconds))[0])
                cpu = cpu_seconds(proc.pid)
                t0 = time.perf_counter()
                seen = len(log)
                rate, times = asyncio.run(throughput(url, args.clients, args.tokens, args.seconds))
                server_ttft += [float(line.split("(first ")[1].split()[0])
                                for line in log[seen:] if "(first " in line]  # fmt: skip
                many_cpu.append(rate * (time.perf_counter() - t0) / (cpu_seconds(proc.pid) - cpu))
                many.append(rate)
                ttft += times
                rate, per_cpu = sample_n(run, 32, args.sample_length, args.threads)
                sampled.append(rate)
                sampled_cpu.append(per_cpu)
                print(f"round {r + 1}: 1 client {one[-1]:,.0f} chars/s, {args.clients} "
                      f"clients {many[-1]:,.0f}, sample -N 32 {sampled[-1]:,.0f}",
                      file=sys.stderr)  # fmt: skip
            before = rss_mb(proc.pid)
            t0 = time.perf_counter()
            counts = asyncio.run(faults(url, args.requests, args.clients, 600))
            fault_seconds = time.perf_counter() - t0
            leaked = idle_rows(url)
            after = rss_mb(proc.pid)
            attack = asyncio.run(hostile(url, args.slow, args.big_headers, 60.0, proc.pid))
            served = httpx.get(f"{url}/health", timeout=10).status_code  # and it still answers
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    one_m, many_m, sample_m = (median(x) for x in (one, many, sampled))
    many_c, sample_c = median(many_cpu), median(sampled_cpu)
    fivexx = sum(v for k, v in counts.items() if k.startswith("5"))
    figures = {
        "run": str(args.run or "2×512, 30 steps"), "threads": args.threads,
        "clients": args.clients, "tokens": args.tokens, "seconds": args.seconds,
        "repeats": args.repeats, "one_client_chars_s": one_m, "many_clients_chars_s": many_m,
        "sample_n32_chars_s": sample_m, "many_over_one": many_m / one_m,
        "many_over_sample": many_m / sample_m, "many_chars_per_cpu_s": many_c,
        "sample_chars_per_cpu_s": sample_c, "ttft_p50_ms": 1000 * percentile(ttft, 0.5),
        "ttft_p99_ms": 1000 * percentile(ttft, 0.99), "ttft_requests": len(ttft),
        "server_ttft_p50_ms": 1000 * percentile(server_ttft, 0.5),
        "server_ttft_p99_ms": 1000 * percentile(server_ttft, 0.99),
        "fault_requests": args.requests, "fault_seconds": fault_seconds, "statuses": counts,
        "5xx": fivexx, "rows_left": leaked, "rss_before_mb": before, "rss_after_mb": after,
        "server_exit": proc.returncode, "log_lines": len(log), "hostile": attack,
        "health_after_hostile": served,
        "tracebacks": sum("Traceback" in line for line in log),
    }  # fmt: skip
    print(f"1 client:              {one_m:10,.0f} chars/s   (median of {args.repeats})")
    print(f"{args.clients} clients:            {many_m:10,.0f} chars/s   "
          f"{many_m / one_m:.1f}× one client")  # fmt: skip
    print(f"charlstm sample -N 32: {sample_m:10,.0f} chars/s   server/sample "
          f"{many_m / sample_m:.2f}")  # fmt: skip
    print(f"per CPU-second: server {many_c:,.0f} chars (all its threads), sample -N 32 "
          f"{sample_c:,.0f}: {many_c / sample_c:.2f}")  # fmt: skip
    print(f"time to first token under {args.clients} clients: p50 "
          f"{figures['ttft_p50_ms']:.0f} ms, p99 {figures['ttft_p99_ms']:.0f} ms "
          f"({len(ttft)} requests); in the server (request read → first token ready): p50 "
          f"{figures['server_ttft_p50_ms']:.0f} ms, p99 "
          f"{figures['server_ttft_p99_ms']:.0f} ms")  # fmt: skip
    print(
        f"faults: {args.requests} requests in {fault_seconds:.1f} s: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    )
    print(f"5xx responses: {fivexx}; rows left when idle: {leaked}; resident memory "
          f"{before:.0f} → {after:.0f} MB ({100 * (after / before - 1):+.1f}%); server exit "
          f"status {proc.returncode}")  # fmt: skip
    print(f"hostile: {args.slow} slowloris connections cut within "
          f"{attack['slow_cut_max_s']:.1f} s, {args.big_headers} endless headers within "
          f"{attack['big_cut_max_s']:.1f} s (" + ", ".join(f"{k}: {v}" for k, v in
          sorted(attack["answers"].items())) + f"); resident memory {attack['rss_before_mb']:.0f}"
          f" → peak {attack['rss_peak_mb']:.0f} → {attack['rss_after_mb']:.0f} MB; /health "
          f"then {served}; tracebacks in the log: {figures['tracebacks']}")  # fmt: skip
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
