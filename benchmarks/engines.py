"""The engines side by side (#18): numpy (model.safetensors, no torch) against torch, and the
browser page in headless Chromium.

    python benchmarks/engines.py                       # 2×512: the issue's goals
    python benchmarks/engines.py --hidden 256 --page   # 2×256, with the page
    python benchmarks/engines.py --hidden 64 --chars 1000 --repeats 2 --page   # a smoke run

One char model (2 layers × --hidden, one training step on tiny-shakespeare: speed does not
depend on training) is measured, each figure the median of --repeats, the engines alternating:

1. launch to first character: `charlstm sample -m RUN --length 1 --engine E --prime TEXT
   --no-echo-prime` in a fresh process, to the first byte on stdout (the first generated
   character; `python -c "import torch"` for comparison).
2. one stream, characters per second: both engines' generators in this process, one thread
   each (numpy's BLAS via OPENBLAS_NUM_THREADS=1, torch.set_num_threads(1): what `sample` uses
   for one stream), --chars characters from the same prime; then the CLI end to end (first
   character to last of --cli-chars).
3. the memory limit: each step reads the weights once (the layer-0 table row, w_h of layer 0,
   [w_x; w_h] of every later layer, the head); bandwidth measured by numpy summing a 256 MB
   float32 array (main memory) and an array the size of the weights (the cache, if they fit),
   the fastest of max, a dot product and a matrix-vector product;
   the limit = bandwidth / bytes per step, and the numpy engine's share of it.
4. with --page: `charlstm export --html`, the page opened from disk in headless Chromium
   generating --page-chars characters (temperature 0.8, seed 1), its own chars/s as it
   reports it, and its size against the weights' bytes.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads: one stream, one thread

import argparse  # noqa: E402
import html  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
PRIME = "ROMEO:\nBut soft, what light"


def first_and_total(cmd: list[str], cwd: Path) -> tuple[float, float, int]:
    """Seconds to the first byte on stdout, seconds to the end, and the characters printed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    t_first = time.perf_counter() - t0
    rest = proc.stdout.read()
    proc.wait()
    return t_first, time.perf_counter() - t0, len((first + rest).decode("utf-8"))


def in_process(run: Path, chars: int, repeats: int) -> dict[str, float]:
    """Median chars/s of one stream for each engine's generator, alternating."""
    import torch

    from charlstm.config import SampleConfig
    from charlstm.data.tokenizer import tokenizer_from_dict
    from charlstm.export.convert import model_from_portable
    from charlstm.formats.model_file import read_portable
    from charlstm.generate.loop import Request, generate
    from charlstm.generate.numpy_engine import NumpyStepper
    from charlstm.generate.torch_engine import TorchStepper

    torch.set_num_threads(1)
    model = read_portable(run / "model.safetensors")
    net = model_from_portable(model)
    tokenizer = tokenizer_from_dict(model.tokenizer.to_dict())
    request = Request(tokenizer.encode(PRIME), SampleConfig(length=chars), seed=1)
    steppers = {"numpy": lambda: NumpyStepper(model), "torch": lambda: TorchStepper(net)}
    rates: dict[str, list[float]] = {"numpy": [], "torch": []}
    for _ in range(repeats):
        for name in rates:
            stepper = steppers[name]()
            t0 = time.perf_counter()
            for _ in generate(stepper, tokenizer, request):  # the loop every door runs
                pass
            rates[name].append(chars / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in rates.items()}


def bytes_per_step(run: Path) -> int:
    """The weights one step of the numpy engine reads at batch 1."""
    from charlstm.formats.model_file import read_portable
    from charlstm.generate.numpy_engine import NumpyStepper

    s = NumpyStepper(read_portable(run / "model.safetensors"))
    gh = s.gates * s.hidden_size
    first = s.layers[0]
    total = (gh * 4 if s.table is not None else first["w_x"].nbytes) + first["w_h"].nbytes
    for layer in s.layers[1:]:
        total += layer["w_x"].nbytes + layer["w_h"].nbytes
    return total + s.w_out.nbytes + sum(layer["b"].nbytes for layer in s.layers) + s.b_out.nbytes


def bandwidth(nbytes: int, repeats: int) -> float:
    """Bytes per second numpy reads from a float32 array of `nbytes`, one thread, warm: the
    fastest of three streaming reads (max, a dot product of two halves, a matrix-vector product
    as a step makes), each the best of its timings."""
    a = np.ones(max(nbytes // 4 // 2048, 2) * 2048, np.float32)
    half, rows = a[: a.size // 2], a.reshape(-1, 2048)
    x = np.ones(rows.shape[0], np.float32)
    probes = {"max": (a.max, a.nbytes), "dot": (lambda: np.dot(half, a[half.size :]), a.nbytes),
              "gemv": (lambda: x @ rows, rows.nbytes)}  # fmt: skip
    reps = max(1, (1 << 29) // a.nbytes)  # ~0.5 GB read per timing
    best = 0.0
    for read, size in probes.values():
        read()
        for _ in range(max(3, repeats)):
            t0 = time.perf_counter()
            for _ in range(reps):
                read()
            best = max(best, size * reps / (time.perf_counter() - t0))
    return best


def page(run: Path, work: Path, chars: int, repeats: int) -> tuple[float, int, int]:
    """The page's own chars/s in headless Chromium (median), its size, the weights' bytes."""
    from charlstm.formats.model_file import read_portable

    out = work / "play.html"
    cli = [sys.executable, "-m", "charlstm", "export", str(run), "--html", str(out), "-q"]
    subprocess.run(cli, check=True)
    chromium = shutil.which("chromium")
    assert chromium, "the page needs Debian's chromium (apt-get install chromium)"
    url = f"{out.as_uri()}?run=sync&length={chars}&temp=0.8&seed=1&prime=ROMEO%3A"
    rates = []
    for i in range(repeats):
        dom = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={work / f'profile{i}'}", "--dump-dom", url],
            capture_output=True, text=True, check=True, timeout=600,
        ).stdout  # fmt: skip
        found = re.search(r'data-chars-per-second="([^"]+)"', dom)
        assert found, dom[:400]
        rates.append(float(html.unescape(found[1])))
    weights = read_portable(run / "model.safetensors").num_bytes
    return statistics.median(rates), out.stat().st_size, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--chars", type=int, default=5000, help="chars per in-process timing")
    parser.add_argument("--cli-chars", type=int, default=20_000, help="chars per CLI sample")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--page", action="store_true", help="also measure the browser page")
    parser.add_argument("--page-chars", type=int, default=20_000)
    args = parser.parse_args()
    py = sys.executable
    print(f"{os.cpu_count()} cores; {args.layers}×{args.hidden} LSTM, 65 characters; "
          f"median of {args.repeats}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [py, "-m", "charlstm", "train", str(CORPUS), "--steps", "1", "--hidden",
             str(args.hidden), "--layers", str(args.layers), "--threads", "1", "--name", "m",
             "-q"], cwd=work, check=True,
        )  # fmt: skip
        run = work / "checkpoints" / "m"
        # The prime is not echoed: the first byte is the first generated character.
        sample = [py, "-m", "charlstm", "sample", "-m", str(run), "--seed", "1", "-q",
                  "--prime", PRIME, "--no-echo-prime"]  # fmt: skip

        firsts: dict[str, list[float]] = {"numpy": [], "torch": []}
        ends: dict[str, list[float]] = {"numpy": [], "torch": []}
        imports = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run([py, "-c", "import torch"], check=True)
            imports.append(time.perf_counter() - t0)
            for engine in firsts:
                first, _, _ = first_and_total([*sample, "--length", "1", "--engine", engine], work)
                firsts[engine].append(first)
                t_first, total, n = first_and_total(
                    [*sample, "--length", str(args.cli_chars), "--engine", engine], work
                )
                ends[engine].append((n - 1) / (total - t_first))
        first = {k: statistics.median(v) for k, v in firsts.items()}
        end = {k: statistics.median(v) for k, v in ends.items()}
        rates = in_process(run, args.chars, args.repeats)

        step_bytes = bytes_per_step(run)
        dram = bandwidth(256 << 20, args.repeats)
        cache = bandwidth(step_bytes, args.repeats)

        def row(what: str, a: float, b: float, fmt: str) -> None:
            print(f"| {what} | {a:{fmt}} | {b:{fmt}} | {a / b:.2f}× |")

        print("\n| measure | numpy engine | torch engine | numpy / torch |")
        print("|---|---|---|---|")
        print(f"| launch to first character, `--length 1` (s) | {first['numpy']:.3f} | "
              f"{first['torch']:.3f} | {first['numpy'] / first['torch']:.2f}× |")  # fmt: skip
        row("one stream, chars/s, in process (1 thread)", rates["numpy"], rates["torch"], ",.0f")
        row("one stream, chars/s, `charlstm sample` (first char to last)", end["numpy"],
            end["torch"], ",.0f")  # fmt: skip
        print(f"\n`python -c 'import torch'`: {statistics.median(imports):.3f} s")
        print(f"\nweights read per step: {step_bytes / 1e6:.2f} MB")
        print("| read bandwidth (numpy, 1 thread) | GB/s | limit, chars/s | numpy engine's share |")
        print("|---|---|---|---|")
        for name, bw in (
            ("main memory (256 MB array)", dram),
            (f"an array the size of the weights ({step_bytes / 1e6:.1f} MB)", cache),
        ):
            limit = bw / step_bytes
            print(f"| {name} | {bw / 1e9:.1f} | {limit:,.0f} | {rates['numpy'] / limit:.0%} |")
        if args.page:
            cps, size, weights = page(run, work, args.page_chars, args.repeats)
            print(f"\npage in headless Chromium: {cps:,.0f} chars/s; {size / 1e6:.2f} MB for "
                  f"{weights / 1e6:.2f} MB of weights ({size / weights:.2f}×)")  # fmt: skip


if __name__ == "__main__":
    main()
