"""A corpus larger than it is wise to hold in memory: tokenizing speed and peak resident memory.

    python benchmarks/big_corpus.py                 # 2 GB, built from the stdlib's *.py files
    python benchmarks/big_corpus.py --gb 0.5 --steps 100

Builds the corpus itself (the running Python's standard-library sources, repeated until it is
--gb gigabytes), then runs the real CLI in fresh processes and reads each one's peak resident
set size (ru_maxrss) from the kernel:
  read whole     python reading the file into one str (what a loader that does not stream costs)
  first train    `charlstm train BIG --steps N`: tokenize (streamed into the cache's id file),
                 then train
  second train   the same command again: the ids come from the cache (the corpus is only hashed)
The corpus and the cache live in a temporary folder (or --dir) and are deleted afterwards
unless --keep is given. Use an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

_MEASURE = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(done.stderr[-3000:] if done.returncode else '')\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "print(done.stdout)\n"
    "sys.exit(done.returncode)\n"
)


def build(path: Path, size: int) -> int:
    """Write the stdlib's *.py files, over and over, until `size` bytes; returns the bytes."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
    written = 0
    with open(path, "wb") as f:
        while written < size:
            for p in sources:
                try:
                    data = p.read_bytes().decode("utf-8", "replace").encode("utf-8")
                except OSError:
                    continue
                f.write(data + b"\n")
                written += len(data) + 1
                if written >= size:
                    break
    return written


def measured(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run cmd in a fresh process: (peak RSS MB, seconds, its stdout)."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd], cwd=cwd, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr}")
    rss_kb, _, out = done.stdout.partition("\n")
    return int(rss_kb) / 1024, seconds, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--gb", type=float, default=2.0, help="corpus size in GB (1e9 bytes)")
    parser.add_argument("--steps", type=int, default=200, help="training steps per run")
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the corpus and the cache")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(dir=args.dir, prefix="charlstm-big-"))
    try:
        corpus = work / "big.txt"
        t0 = time.perf_counter()
        size = build(corpus, int(args.gb * 1e9))
        print(
            f"{platform.machine()}, {os.cpu_count()} cores, {sys.version.split()[0]}; corpus "
            f"{size / 1e9:.2f} GB of stdlib source built in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        print("| run | peak RSS | wall | tokenizing | training tok/s |")
        print("|---|---|---|---|---|")
        rss, secs, _ = measured(
            [sys.executable, "-c", f"t = open({str(corpus)!r}, encoding='utf-8').read()"], work
        )
        print(f"| read whole into a str | {rss:,.0f} MB | {secs:.1f} s | | |", flush=True)
        train = [sys.executable, "-m", "charlstm", "train", str(corpus), "--steps",
                 str(args.steps), "--json", "--name"]  # fmt: skip
        for label, name in (("first train (tokenizes)", "a"), ("second train (cached)", "b")):
            rss, secs, out = measured([*train, name], work)
            s = json.loads(out.strip().splitlines()[-1])
            tok = s["tokenize_seconds"]
            how = "from the cache" if s["tokens_from_cache"] else f"{size / tok / 1e6:.0f} MB/s"
            print(
                f"| {label} | {rss:,.0f} MB | {secs:.1f} s | {tok:.1f} s ({how}) "
                f"| {s['tokens_per_s']:,.0f} |",
                flush=True,
            )
        print(f"(peak RSS of this script itself: "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB)")  # fmt: skip
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
