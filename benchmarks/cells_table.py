"""Every cell at a given budget on tiny-shakespeare: best validation loss and training tokens/s,
`charlstm train --cell CELL --budget B` with everything else at its defaults (sized to the
budget), side by side in one session.

    python benchmarks/cells_table.py --budgets 60s,10m                # the table in BENCHMARKS.md
    python benchmarks/cells_table.py --budgets 60s --repeats 3 --cells lstm,mogrifier,slstm
    python benchmarks/cells_table.py --budgets 5s --cells lstm,slstm -- --threads 1   # smoke

Runs are sequential, each a fresh process (`charlstm train ... --json`), so they never share the
cores; the order is cell by cell within a budget. The size, learning rate, dropout, batch and
window are what `--budget` sizing chooses for each cell on this machine (printed in the
"chosen" column). Use an otherwise idle machine: two jobs on two cores distort every figure.
The long-range recall of each cell is benchmarks/long_range.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from charlstm.config import CELLS

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = HERE.parent.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--budgets", default="60s,10m")
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("extra", nargs="*", help="more `charlstm train` options, after --")
    args = parser.parse_args()
    print(f"`python benchmarks/cells_table.py {shlex.join(sys.argv[1:])}`\n")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}\n")  # fmt: skip
    print("| budget | cell | chosen | parameters | steps | tokens/s | best val nats/char "
          "(each run) | median |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets.split(","):
            for cell in args.cells.split(","):
                runs = []
                for i in range(args.repeats):
                    cmd = [sys.executable, "-m", "charlstm", "train", str(args.corpus),
                           "--budget", budget, "--cell", cell, "--json", "--quiet",
                           "--checkpoints", tmp, "--name", f"{cell}-{budget}-{i}",
                           *args.extra]  # fmt: skip
                    done = subprocess.run(cmd, capture_output=True, text=True)
                    if done.returncode != 0:
                        print(f"| {budget} | {cell} | failed: {done.stderr.strip()[-200:]} |")
                        break
                    runs.append(json.loads(done.stdout))
                if not runs:
                    continue
                losses = [r["best_val_loss"] for r in runs]
                print(f"| {budget} | {cell} | {runs[0].get('chosen', '')} | "
                      f"{runs[0]['parameters']:,} | "
                      f"{statistics.median(r['steps'] for r in runs):,.0f} | "
                      f"{statistics.median(r['tokens_per_s'] for r in runs):,.0f} | "
                      f"{', '.join(f'{v:.4f}' for v in losses)} | "
                      f"{statistics.median(losses):.4f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
