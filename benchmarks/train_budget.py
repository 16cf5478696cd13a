"""Best validation loss reached by `charlstm train` in a fixed wall-clock budget.

    python benchmarks/train_budget.py                      # tiny-shakespeare, 135 s, defaults
    python benchmarks/train_budget.py --repeats 3 -- --hidden 384

Runs the real CLI in a subprocess (default settings plus whatever follows `--`), on the corpus
beside the project (../shared/corpora/tinyshakespeare.txt), and prints one Markdown table row per
run and the median. Each run's best.pt is then scored on the validation tail (the last 10% of
the characters, as training cuts it) a second way: `charlstm evaluate --reset-every 64`, every
64 characters from a zero state, the context nanoGPT's CPU recipe sees. Use an otherwise idle
machine: two jobs on two cores distort every figure.
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--budget", default="135s")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the runs in this folder (default: deleted)")
    parser.add_argument("extra", nargs="*", help="more `charlstm train` options, after --")
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"python {platform.python_version()}",
        file=sys.stderr,
    )
    losses = []
    print("| run | options | chosen | steps (epochs) | tokens/s | best val nats/char | bits/char "
          "| reset every 64 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        tmp = str(args.keep or scratch)
        text = args.corpus.read_text(encoding="utf-8")
        tail = Path(scratch) / "validation.txt"
        tail.write_text(text[int(len(text) * 0.9) :], encoding="utf-8")
        for i in range(args.repeats):
            cmd = [sys.executable, "-m", "charlstm", "train", str(args.corpus), "--budget",
                   args.budget, "--json", "--quiet", "--checkpoints", tmp, "--name", f"run{i}",
                   *args.extra]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            s = json.loads(out)
            losses.append(s["best_val_loss"])
            ev = subprocess.run(
                [sys.executable, "-m", "charlstm", "evaluate", str(tail), "-m",
                 f"{tmp}/run{i}/best.pt", "--reset-every", "64", "--json", "-q"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            short = json.loads(ev)["loss"]
            chosen = s.get("chosen", "")
            print(
                f"| {i + 1} | `--budget {args.budget} {' '.join(args.extra)}` | {chosen} | "
                f"{s['steps']:,} ({s['epochs']:.1f}) | {s['tokens_per_s']:,.0f} | "
                f"{s['best_val_loss']:.4f} | {s['best_val_bpc']:.3f} | {short:.4f} |",
                flush=True,
            )
    print(
        f"\nmedian best validation loss: {statistics.median(losses):.4f} nats/char "
        f"over {len(losses)} run(s)"
    )


if __name__ == "__main__":
    main()
