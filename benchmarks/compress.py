"""`charlstm compress` side by side with xz, zstd and bzip2, and against `charlstm evaluate`.

    python benchmarks/compress.py                          # trains 30 min on tiny-shakespeare
    python benchmarks/compress.py --model checkpoints/RUN  # a given model (trained on the 90%)
    python benchmarks/compress.py --model RUN --wiki-model WRUN   # and wikitext-2 (below)
    python benchmarks/compress.py --model RUN --segments 1 8 54 128   # the segment trade-off

The text is the validation split of the corpus: its last 10% (what `charlstm train` holds out,
so a model trained on the corpus file never saw it). For the text and each model it reports:

- the compressed size, against the size `charlstm evaluate`'s bits per character imply
  (bits/char × characters / 8): the coder's overhead, the header, the zero state each segment
  starts from, and the integer arithmetic together;
- the sizes of `xz -9e`, `zstd --ultra -22` and `bzip2 -9` (those installed) on the same text;
- KB/s (original bytes per second) to compress and to decompress, with each engine and thread
  count asked for, as the coding time the command reports and as the whole command's wall
  time (start-up and quantising the model included); every output is checked against the text.

Everything runs through the real CLI in fresh processes, with OMP/OPENBLAS/MKL threads set to
the --threads given. With --wiki-model (or --wikitext, which trains one on wikitext2.valid.txt
for --train-budget), the same on wikitext2.test.txt. Use an otherwise idle machine: the load
average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPORA = HERE.parent.parent / "shared" / "corpora"
EXTERNAL = {
    "xz -9e": ["xz", "-9e", "-c"],
    "zstd --ultra -22": ["zstd", "--ultra", "-22", "-c"],
    "bzip2 -9": ["bzip2", "-9", "-c"],
}


def charlstm(*args: str, stdin: bytes | None = None, threads: int = 0) -> tuple[bytes, str, float]:
    env = dict(os.environ)
    if threads:
        env.update(
            {
                k: str(threads)
                for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
            }
        )
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "charlstm", *args], input=stdin, capture_output=True, env=env
    )
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"failed: charlstm {' '.join(args)}\n{done.stderr.decode()[-2000:]}")
    return done.stdout, done.stderr.decode(), wall


def train(corpus: Path, budget: str, work: Path, name: str) -> Path:
    print(f"training on {corpus.name} for {budget}…", file=sys.stderr)
    charlstm(
        "train", str(corpus), "--budget", budget, "--name", name, "--checkpoints", str(work), "-q"
    )
    return work / name


def coded_seconds(stderr: str) -> float:
    """The coding time the command reports: '… in 12.3s (…'."""
    match = re.search(r"in\s+([\d.]+)s\s+\(", stderr)
    if not match:
        sys.exit(f"no timing in: {stderr!r}")
    return float(match[1])


def bench(
    model: Path, text: bytes, label: str, configs: list[tuple[str, int]], segments: list[int]
) -> None:
    chars = len(text.decode("utf-8"))
    with tempfile.NamedTemporaryFile(suffix=".txt") as f:
        f.write(text)
        f.flush()
        out, _, _ = charlstm("evaluate", f.name, "-m", str(model), "--json", "-q")
    ev = json.loads(out)
    implied = ev["bits_per_char"] * chars / 8
    print(f"\n### {label}: {len(text):,} bytes, {chars:,} characters; model {model}")
    print(
        f"\n`charlstm evaluate`: {ev['bits_per_char']:.4f} bits/char → {implied:,.0f} bytes "
        "implied\n"
    )
    print("| compressor | bytes | bits/char | vs evaluate's size | vs charlstm |")
    print("|---|---|---|---|---|")
    ours, err, _ = charlstm("compress", "-m", str(model), stdin=text)
    rows = [("charlstm compress", len(ours))]
    for name, cmd in EXTERNAL.items():
        if shutil.which(cmd[0]):
            rows.append(
                (name, len(subprocess.run(cmd, input=text, capture_output=True, check=True).stdout))
            )
        else:
            print(f"({name}: not installed)", file=sys.stderr)
    for name, size in rows:
        print(
            f"| {name} | {size:,} | {8 * size / chars:.4f} | {size / implied - 1:+.2%} | "
            f"{size / len(ours) - 1:+.1%} |"
        )
    print(f"\n{err.strip().splitlines()[-1]}\n")
    print(
        "| engine | threads | compress KB/s (coding / whole command) | "
        "decompress KB/s (coding / whole command) |"
    )
    print("|---|---|---|---|")
    for engine, threads in configs:
        how = ["-m", str(model), "--engine", engine, "--threads", str(threads)]
        blob, err_c, wall_c = charlstm("compress", *how, stdin=text, threads=threads)
        back, err_d, wall_d = charlstm("decompress", *how, stdin=blob, threads=threads)
        if blob != ours or back != text:
            sys.exit(f"{engine}/{threads}: different bytes or a failed round trip")
        kb = len(text) / 1000
        print(
            f"| {engine} | {threads or 'all'} | {kb / coded_seconds(err_c):.1f} / "
            f"{kb / wall_c:.1f} | {kb / coded_seconds(err_d):.1f} / {kb / wall_d:.1f} |"
        )
    if segments:
        print("\n| segments | bytes | vs evaluate's size | compress KB/s (coding) |")
        print("|---|---|---|---|")
        for s in segments:
            blob, err_c, _ = charlstm(
                "compress", "-m", str(model), "--segments", str(s), stdin=text
            )
            print(
                f"| {s} | {len(blob):,} | {len(blob) / implied - 1:+.2%} | "
                f"{len(text) / 1000 / coded_seconds(err_c):.1f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=CORPORA / "tinyshakespeare.txt")
    parser.add_argument("--model", type=Path, help="run folder or .pt trained on the corpus")
    parser.add_argument("--wiki-model", type=Path, help="run trained on wikitext2.valid.txt")
    parser.add_argument("--wikitext", action="store_true", help="train the wikitext-2 model")
    parser.add_argument("--train-budget", default="30m")
    parser.add_argument("--engines", nargs="+", default=["torch", "numpy"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 0], help="0 = all cores")
    parser.add_argument(
        "--segments",
        nargs="*",
        type=int,
        default=[],
        help="also compress with each of these segment counts",
    )
    args = parser.parse_args()
    configs = [(e, t) for e in args.engines for t in args.threads]
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model or train(args.corpus, args.train_budget, work, "ts")
        text = args.corpus.read_bytes()
        val = text.decode("utf-8")
        val = val[int(len(val) * 0.9) :].encode()  # the validation split `charlstm train` holds out
        bench(model.resolve(), val, f"{args.corpus.name}, last 10%", configs, args.segments)
        wiki = args.wiki_model
        if wiki is None and args.wikitext:
            wiki = train(CORPORA / "wikitext2.valid.txt", args.train_budget, work, "wiki")
        if wiki is not None:
            test = (CORPORA / "wikitext2.test.txt").read_bytes()
            # 1.26 MB: one engine and thread count is enough to see the speed.
            bench(wiki.resolve(), test, "wikitext2.test.txt", configs[-1:], [])
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
