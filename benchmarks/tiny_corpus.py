"""What size suits a corpus of a few kilobytes? `charlstm train` on the first N KB of
tiny-shakespeare at several sizes, and with no size given (charlstm's own choice), side by side.

    python benchmarks/tiny_corpus.py --kb 20 --budget 60s
    python benchmarks/tiny_corpus.py --kb 5,20,100 --sizes 1x64,1x128,2x128,2x192,2x256
    python benchmarks/tiny_corpus.py --kb 20 --budget 10s --sizes 1x64 -- --threads 1  # smoke

Each run keeps the defaults but for --hidden and --layers (the learning rate and dropout are
the budget sizing's for that size); the last 10% of the excerpt is the validation split. The
table gives the best validation loss and the last training loss (their gap shows over-fitting).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
    parser.add_argument("--kb", default="20", help="comma-separated excerpt sizes, in KB")
    parser.add_argument("--budget", default="60s")
    parser.add_argument("--sizes", default="1x64,1x128,2x128,2x192,2x256")
    parser.add_argument("extra", nargs="*", help="more `charlstm train` options, after --")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}", file=sys.stderr)  # fmt: skip
    print(
        f"`python benchmarks/tiny_corpus.py --kb {args.kb} --budget {args.budget} --sizes "
        f"{args.sizes}" + (f" -- {' '.join(args.extra)}" if args.extra else "") + "`\n"
    )
    print("| corpus | size asked | chosen | parameters | steps | last train loss "
          "| best val nats/char |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    text = args.corpus.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        for kb in (int(v) for v in args.kb.split(",")):
            corpus = Path(tmp) / f"first{kb}kb.txt"
            corpus.write_text(text[: kb * 1000], encoding="utf-8")
            for size in [None, *args.sizes.split(",")]:
                flags = []
                if size:
                    layers, hidden = size.split("x")
                    flags = ["--hidden", hidden, "--layers", layers]
                name = f"kb{kb}-{size or 'auto'}"
                cmd = [sys.executable, "-m", "charlstm", "train", str(corpus), "--budget",
                       args.budget, "--json", "--quiet", "--checkpoints", tmp, "--name", name,
                       *flags, *args.extra]  # fmt: skip
                s = json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                              check=True).stdout)  # fmt: skip
                print(f"| {kb} KB | {size or '(none)'} | {s.get('chosen', '')} | "
                      f"{s['parameters']:,} | {s['steps']:,} | {s['last_train_loss']:.4f} | "
                      f"{s['best_val_loss']:.4f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
