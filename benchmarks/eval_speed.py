"""Evaluation speed: parallel streams (charlstm's default) against one sequential pass of batch 1.

    python benchmarks/eval_speed.py                       # trains a 2×512 model for 120 s first
    python benchmarks/eval_speed.py --model checkpoints/RUN --repeats 3

Runs `charlstm evaluate` in fresh processes on the first 1,000,000 characters of
tiny-shakespeare, alternating `--streams 1` and `--streams S`, and reports the median seconds,
the ratio, and how far apart the two losses are (the parallel streams warm their state on the
text before their starts, so the figure should match the single pass). The model should be
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
    parser.add_argument("--streams", type=int, default=32)
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
        seconds: dict[int, list[float]] = {1: [], args.streams: []}
        losses: dict[int, float] = {}
        for _ in range(args.repeats):
            for streams in seconds:
                r = charlstm("evaluate", str(text), "-m", str(model), "--streams", str(streams),
                             cwd=work)  # fmt: skip
                seconds[streams].append(r["seconds"])
                losses[streams] = r["loss"]
        one, many = statistics.median(seconds[1]), statistics.median(seconds[args.streams])
        print("| streams | seconds | chars/s | loss (nats/char) |")
        print("|---|---|---|---|")
        for streams, t in ((1, one), (args.streams, many)):
            print(f"| {streams} | {t:.2f} | {args.chars / t:,.0f} | {losses[streams]:.6f} |")
        diff = abs(losses[args.streams] - losses[1])
        print(f"speed-up {one / many:.1f}×; losses differ by {diff:.1e} nats/char")


if __name__ == "__main__":
    main()
