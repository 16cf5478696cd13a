"""Which batch and window reach the lowest loss in a budget? `charlstm train` at several -b × -t,
side by side, everything else at its defaults (sized to the budget), on tiny-shakespeare.

    python benchmarks/batch_window.py --budget 135s --repeats 3
    python benchmarks/batch_window.py --budget 60s --layouts 16x64,32x64,64x64,128x64,32x128 \
        -- --threads 1 --precision bf16
    python benchmarks/batch_window.py --budget 10s --layouts 32x64,64x64 -- --threads 1  # smoke
    python benchmarks/batch_window.py --tokens 2000000 -- --threads 1   # K, whatever the load

A bigger batch makes more tokens per second (a matrix multiply uses the machine better) but
fewer optimizer steps per token, and a layout of many short streams fills the same multiply
with less correlated text than a few long ones. sizing.choose_layout takes the layout that
learns most per second: its measured tokens/s × what a token is worth to training in it
(sizing.LAYOUT_WORTH). This script measures both sides.

The default (wall-clock) mode trains each layout for the budget and prints its tokens/s and best
validation loss. Use an otherwise idle machine: two jobs on two cores distort every figure.

--tokens N measures the worths without the clock, so a busy machine cannot distort them: every
layout trains on N tokens (--steps N / (B·T), 2×256 at its learning rate), and 32 × 64 also on
N/2 for the slope s of loss against tokens (nats per e-fold). A layout whose final loss is
L is worth exp(−(L − L_best) / s) tokens of the best layout a token: the numbers in
LAYOUT_WORTH. It also fits K of McCandlish et al. (2018), in whose model a batch of b tokens
reaches what N / (1 + b/K) tokens reach at a batch near zero, to the layouts' losses
(L_b = a + s·ln(1 + b/K)); where windows differ, K alone does not explain the losses.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = HERE.parent.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def train(corpus: Path, budget: str, extra: list[str], where: str, name: str) -> dict:
    cmd = [sys.executable, "-m", "charlstm", "train", str(corpus), "--budget", budget, "--json",
           "--quiet", "--checkpoints", where, "--name", name, *extra]  # fmt: skip
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--budget", default="135s")
    parser.add_argument("--layouts", default="32x64,32x32,128x16,16x64,64x32,64x64")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=0, help="fixed tokens instead of a budget")
    parser.add_argument("extra", nargs="*", help="more `charlstm train` options, after --")
    args = parser.parse_args()
    layouts = [tuple(int(v) for v in spec.split("x")) for spec in args.layouts.split(",")]
    if args.tokens:
        fixed_tokens(args, layouts)
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}", file=sys.stderr)  # fmt: skip
    print(f"`python benchmarks/batch_window.py --budget {args.budget} --layouts {args.layouts} "
          f"--repeats {args.repeats}" + (f" -- {' '.join(args.extra)}" if args.extra else "")
          + "`\n")  # fmt: skip
    print("| B × T | chosen | steps | tokens/s | best val nats/char (each run) | median |")
    print("|---|---|---|---|---|---|")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for b, t in layouts:
            runs = [train(args.corpus, args.budget, ["-b", str(b), "-t", str(t), *args.extra],
                          tmp, f"b{b}t{t}r{i}") for i in range(args.repeats)]  # fmt: skip
            losses = [r["best_val_loss"] for r in runs]
            rate = statistics.median(r["tokens_per_s"] for r in runs)
            results[b, t] = (statistics.median(losses), rate)
            print(f"| {b} × {t} | {runs[0].get('chosen', '')} | "
                  f"{statistics.median(r['steps'] for r in runs):,.0f} | {rate:,.0f} | "
                  f"{', '.join(f'{v:.4f}' for v in losses)} | {results[b, t][0]:.4f} |",
                  flush=True)  # fmt: skip
    # What the sizing rule would have taken from these speeds: tokens/s × worth.
    from charlstm.training.sizing import LAYOUT_WORTH

    by_loss = min(results, key=lambda k: results[k][0])
    rated = [bt for bt in results if bt in LAYOUT_WORTH]
    ruled = max(rated, key=lambda bt: results[bt][1] * LAYOUT_WORTH[bt], default=None)
    print(
        f"\nbest layout by loss: {by_loss[0]} × {by_loss[1]}; the sizing rule, from these "
        f"tokens/s: " + (f"{ruled[0]} × {ruled[1]}" if ruled else "(no layout it knows)")
    )


def fixed_tokens(args: argparse.Namespace, layouts: list[tuple[int, ...]]) -> None:
    """Every layout on the same number of tokens; fit K to the final losses (see above)."""
    import math

    size = ["--hidden", "256", "--layers", "2", "--lr", "3.2e-2", "--dropout", "0"]
    print(f"`python benchmarks/batch_window.py --tokens {args.tokens} --layouts {args.layouts}"
          + (f" -- {' '.join(args.extra)}" if args.extra else "") + "`\n")  # fmt: skip
    print("| B × T | tokens | steps | best val nats/char |")
    print("|---|---|---|---|")
    runs = [(b, t, args.tokens) for b, t in layouts] + [(32, 64, args.tokens // 2)]
    final = {}
    with tempfile.TemporaryDirectory() as tmp:
        for b, t, n in runs:
            steps = max(1, n // (b * t))
            extra = ["-b", str(b), "-t", str(t), "--steps", str(steps), *size, *args.extra]
            cmd = [sys.executable, "-m", "charlstm", "train", str(args.corpus), "--json",
                   "--quiet", "--checkpoints", tmp, "--name", f"b{b}t{t}n{n}", *extra]  # fmt: skip
            s = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            final[b, t, n] = s["best_val_loss"]
            print(f"| {b} × {t} | {n:,} | {steps:,} | {s['best_val_loss']:.4f} |", flush=True)
    slope = (final[32, 64, args.tokens // 2] - final[32, 64, args.tokens]) / math.log(2)

    def error(k: float) -> float:
        pred = {(b, t): slope * math.log(1 + b * t / k) for b, t in layouts}
        base = statistics.mean(final[b, t, args.tokens] - pred[b, t] for b, t in layouts)
        return sum((final[b, t, args.tokens] - base - pred[b, t]) ** 2 for b, t in layouts)

    grid = [2 ** (i / 4) for i in range(32, 80)]  # 256 … 2^20 tokens
    k = min(grid, key=error)
    best = min(final[b, t, args.tokens] for b, t in layouts)
    worth = {f"{b}×{t}": math.exp(-(final[b, t, args.tokens] - best) / slope) for b, t in layouts}
    print(f"\nslope {slope:.4f} nats per e-fold of tokens (32 × 64 at N/2 and N); worth of a "
          f"token: {', '.join(f'{k_} {v:.3f}' for k_, v in worth.items())}; K = {k:,.0f} tokens "
          f"fits best (squared error {error(k):.2e})")  # fmt: skip


if __name__ == "__main__":
    main()
