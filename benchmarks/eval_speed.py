"""Evaluation speed: parallel streams (charlstm's default) against one sequential pass of batch 1.

    python benchmarks/eval_speed.py                       # trains a 2×512 model for 120 s first
    python benchmarks/eval_speed.py --model checkpoints/RUN --repeats 3

Runs `charlstm evaluate` in fresh processes on the first 1,000,000 characters of
tiny-shakespeare, alternating `--streams 1`, `--streams S` and (on a CPU with bf16 instructions)
`--streams S --precision bf16`, and reports the median seconds, the speed-ups, and how far each
loss is from the single pass's (the parallel streams warm their state on the text before their
starts, so the figure should match). The model should be
trained: an untrained one forgets its context at once, which would flatter the agreement.
Use an otherwise idle machine.
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

from charlstm.device import cpu_has_bf16

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = HERE.parent.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def charlstm(*args: str, cwd: Path) -> dict:
    cmd = [sys.executable, "-m", "charlstm", *args, "--json"]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--model", type=Path, default=None, help="a run folder or .pt file")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--train-budget", default="120s")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--chars", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model.resolve() if args.model else None
        if model is None:
            s = charlstm("train", str(args.corpus), "--hidden", str(args.hidden), "--budget",
                         args.train_budget, "--name", "m", "-q", cwd=work)  # fmt: skip
            model = work / "checkpoints" / "m"
            print(f"trained 2×{args.hidden} for {args.train_budget}: best validation "
                  f"{s['best_val_loss']:.4f}", file=sys.stderr)  # fmt: skip
        text = work / "held.txt"
        text.write_text(args.corpus.read_text(encoding="utf-8")[: args.chars], encoding="utf-8")
        print(f"{platform.machine()}, {os.cpu_count()} cores; `charlstm evaluate` on "
              f"{args.chars:,} characters; median of {args.repeats}")  # fmt: skip
        runs = [(1, "fp32"), (args.streams, "fp32")]
        if cpu_has_bf16():  # bf16 only where the CPU has the instructions for it
            runs.append((args.streams, "bf16"))
        seconds: dict[tuple[int, str], list[float]] = {run: [] for run in runs}
        losses: dict[tuple[int, str], float] = {}
        for _ in range(args.repeats):
            for streams, precision in runs:
                r = charlstm("evaluate", str(text), "-m", str(model), "--streams", str(streams),
                             "--precision", precision, cwd=work)  # fmt: skip
                seconds[streams, precision].append(r["seconds"])
                losses[streams, precision] = r["loss"]
        base = statistics.median(seconds[runs[0]])
        print("| streams | precision | seconds | chars/s | speed-up | loss (nats/char) | "
              "difference |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for run in runs:
            t = statistics.median(seconds[run])
            diff = losses[run] - losses[runs[0]]
            print(f"| {run[0]} | {run[1]} | {t:.2f} | {args.chars / t:,.0f} | {base / t:.1f}× | "
                  f"{losses[run]:.6f} | {diff:+.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
