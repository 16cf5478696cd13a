"""Training speed and memory on a device (a GPU, or the CPU), and the cost of several processes.

    python benchmarks/device_train.py CORPUS --device cuda             # model × precision × batch
    python benchmarks/device_train.py CORPUS --device cpu --ddp 2      # 1 process vs torchrun 2

Each configuration runs `charlstm train` twice, for N and 2N steps, and reports the speed of the
steps in between: (tokens₂ − tokens₁) / (time₂ − time₁), so start-up (imports, cuDNN plans,
the first steps) cancels out. Validation runs only once, after the timed steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def train(corpus: str, args: list[str], steps: int, workdir: Path, launcher: list[str]) -> dict:
    cmd = [*launcher, "train", corpus, "--steps", str(steps), "--eval-every", str(steps),
           "--json", "--quiet", "--checkpoints", str(workdir), *args]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def speed(corpus: str, args: list[str], steps: int, launcher: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        short = train(corpus, [*args, "--name", "a"], steps, Path(tmp), launcher)
        long = train(corpus, [*args, "--name", "b"], 2 * steps, Path(tmp), launcher)
    tokens = long["tokens_seen"] - short["tokens_seen"]
    seconds = long["elapsed"] - short["elapsed"]
    return {
        "tokens_per_s": tokens / seconds,
        "peak_gpu_memory_mb": long["peak_gpu_memory_mb"],
        "best_val_loss": long["best_val_loss"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("corpus")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=150, help="N: the runs take N and 2N steps")
    p.add_argument("--models", default="2x512,3x1024", help="LAYERSxHIDDEN, comma-separated")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--batches", default="32,128")
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--ddp", type=int, default=0, help="compare 1 process with torchrun N (CPU)")
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args()
    single = [sys.executable, "-m", "charlstm"]
    rows = []
    if a.ddp:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node", str(a.ddp), "-m", "charlstm"]  # fmt: skip
        cores = os.cpu_count() or 1
        for layers, hidden in (m.split("x") for m in a.models.split(",")):
            for batch in a.batches.split(","):
                base = ["--layers", layers, "--hidden", hidden, "-b", batch, "-t", str(a.window),
                        "--device", a.device]  # fmt: skip
                one = [speed(a.corpus, [*base, "--threads", str(cores)], a.steps, single)
                       for _ in range(a.repeats)]  # fmt: skip
                many = [speed(a.corpus, [*base, "--threads", str(cores // a.ddp)], a.steps,
                              torchrun) for _ in range(a.repeats)]  # fmt: skip
                r1 = statistics.median(x["tokens_per_s"] for x in one)
                rn = statistics.median(x["tokens_per_s"] for x in many)
                rows.append(f"| {layers}×{hidden} | {batch}×{a.window} | {r1:,.0f} | {rn:,.0f} "
                            f"| {rn / r1:.2f} |")  # fmt: skip
                print(rows[-1], file=sys.stderr, flush=True)
        print(f"| model | batch × window | 1 process tok/s | {a.ddp} processes tok/s | ratio |")
        print("|---|---|---|---|---|")
    else:
        for layers, hidden in (m.split("x") for m in a.models.split(",")):
            for precision in a.precisions.split(","):
                for batch in a.batches.split(","):
                    args = ["--layers", layers, "--hidden", hidden, "-b", batch,
                            "-t", str(a.window), "--device", a.device,
                            "--precision", precision]  # fmt: skip
                    runs = [speed(a.corpus, args, a.steps, single) for _ in range(a.repeats)]
                    tps = statistics.median(x["tokens_per_s"] for x in runs)
                    mem = runs[0]["peak_gpu_memory_mb"]
                    mem_s = f"{mem:,.0f}" if mem is not None else "—"
                    rows.append(f"| {layers}×{hidden} | {precision} | {batch}×{a.window} "
                                f"| {tps:,.0f} | {mem_s} |")  # fmt: skip
                    print(rows[-1], file=sys.stderr, flush=True)
        print("| model | precision | batch × window | tokens/s | peak memory (MiB) |")
        print("|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n`{' '.join(['python', *sys.argv])}`")


if __name__ == "__main__":
    main()
