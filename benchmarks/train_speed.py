"""Training throughput: `charlstm train` end to end against a bare nn.LSTM loop, and the GEMM peak.

    python benchmarks/train_speed.py                  # 2×256 and 2×512, batch 32 × window 64
    python benchmarks/train_speed.py --hidden 512 --repeats 5

For each size, alternating in one process tree so machine noise hits both alike:
  bare      embedding → nn.LSTM → linear, cross-entropy, backward, Adam step, on random ids
            (the loop anyone would write; speed does not depend on the data)
  charlstm  the real CLI in a subprocess (`charlstm train CORPUS --steps N` with the same sizes,
            no dropout), its tokens/s from the summary: data, logging and evaluation scheduling
            included, the validation passes themselves excluded
Each runs in a fresh process on all cores (torch's default). The GEMM peak is the faster of
torch.mm and oneDNN's matmul on 2048² fp32 matrices, and each loop's fraction of it counts
6 FLOPs per weight per token (forward 2, backward 4).
Use an otherwise idle machine: two jobs on two cores distort every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = HERE.parent.parent / "shared" / "corpora" / "tinyshakespeare.txt"
VOCAB, EMBED, BATCH, WINDOW = 65, 128, 32, 64


def _rate(multiply, n: int, repeats: int) -> float:
    multiply()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        multiply()
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def gemm_peak(n: int = 2048, repeats: int = 5) -> tuple[float, float]:
    """Median GFLOP/s of an n×n fp32 matrix multiply on all threads: (torch.mm, oneDNN).

    torch.mm goes to MKL, which on AMD CPUs keeps to AVX2; oneDNN (which runs nn.LSTM) uses
    AVX-512 where there is one, so its matmul is the machine's real fp32 limit."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    mkl = _rate(lambda: a @ b, n, repeats)
    try:
        am, bm = a.to_mkldnn(), b.to_mkldnn()
        onednn = _rate(lambda: torch._C._nn.mkldnn_linear(am, bm), n, repeats)
    except (AttributeError, RuntimeError):  # a build without oneDNN
        onednn = 0.0
    return mkl, onednn


def flops_per_token(hidden: int, layers: int) -> float:
    weights = 4 * hidden * (EMBED + hidden) + (layers - 1) * 4 * hidden * 2 * hidden
    return 6.0 * (weights + hidden * VOCAB)


class Bare(nn.Module):
    def __init__(self, hidden: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.lstm = nn.LSTM(EMBED, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, x, state):
        out, state = self.lstm(self.embed(x), state)
        return self.head(out), state


def bare_loop(hidden: int, layers: int, steps: int) -> float:
    """Tokens/s of the bare fwd/bwd/step loop, carrying the state as TBPTT does."""
    torch.manual_seed(0)
    model = Bare(hidden, layers)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    data = torch.randint(0, VOCAB, (BATCH, WINDOW * steps + 1))
    state = None
    t0 = time.perf_counter()
    for s in range(steps):
        x = data[:, s * WINDOW : (s + 1) * WINDOW]
        y = data[:, s * WINDOW + 1 : (s + 1) * WINDOW + 1]
        logits, state = model(x, state)
        loss = nn.functional.cross_entropy(logits.transpose(1, 2), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state = tuple(t.detach() for t in state)
    return BATCH * WINDOW * steps / (time.perf_counter() - t0)


def bare_run(hidden: int, layers: int, steps: int) -> float:
    """bare_loop in a fresh process, as charlstm runs in one."""
    cmd = [sys.executable, __file__, "--bare", str(hidden), str(layers), str(steps)]
    return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def charlstm_run(corpus: Path, hidden: int, layers: int, steps: int, out: Path) -> float:
    cmd = [
        sys.executable, "-m", "charlstm", "train", str(corpus), "--steps", str(steps),
        "--hidden", str(hidden), "--layers", str(layers), "--embed", str(EMBED),
        "--batch-size", str(BATCH), "--window", str(WINDOW), "--dropout", "0",
        "--checkpoints", str(out), "--name", f"h{hidden}-{time.time_ns()}", "--json",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout)["tokens_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="rough length of each run")
    parser.add_argument("--bare", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        print(bare_loop(*args.bare))
        return
    mkl, onednn = gemm_peak()
    peak = max(mkl, onednn)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"fp32 GEMM peak {peak:.0f} GFLOP/s (oneDNN {onednn:.0f}, torch.mm/MKL {mkl:.0f}); "
        f"batch {BATCH} × window {WINDOW}, "
        f"embed {EMBED}, vocab {VOCAB}; median of {args.repeats}"
    )
    print("| model | bare nn.LSTM tok/s | charlstm train tok/s | ratio | bare % of peak "
          "| charlstm % of peak |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for hidden in args.hidden:
            # Size the step count from a short probe, so each run lasts about --seconds.
            probe = bare_loop(hidden, args.layers, 3)
            steps = max(10, int(args.seconds * probe / (BATCH * WINDOW)))
            bare, ours = [], []
            for _ in range(args.repeats):
                bare.append(bare_run(hidden, args.layers, steps))
                ours.append(charlstm_run(args.corpus, hidden, args.layers, steps, Path(tmp)))
            b, o = statistics.median(bare), statistics.median(ours)
            f = flops_per_token(hidden, args.layers) / 1e9
            print(
                f"| {args.layers}×{hidden} ({steps} steps) | {b:,.0f} | {o:,.0f} | "
                f"{o / b:.3f} | {100 * b * f / peak:.0f}% | {100 * o * f / peak:.0f}% |",
                flush=True,
            )
            print(f"  runs: bare {[round(v) for v in bare]}, charlstm {[round(v) for v in ours]}",
                  file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
