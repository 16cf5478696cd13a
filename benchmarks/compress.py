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

With --breakdown, where the gap to `evaluate` comes from, in process: the float model's bits over
the same segments (each from a zero state, its first character predicted from a newline), the
integer-exact model's bits for the same tokens, the coded payload, and the header.

Everything else runs through the real CLI in fresh processes, with OMP/OPENBLAS/MKL threads set to
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
    model: Path,
    text: bytes,
    label: str,
    configs: list[tuple[str, int]],
    segments: list[int],
    details: bool = False,
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
    # Every engine and thread count must write the same bytes and read them back.
    timings, ours, err = [], None, ""
    for engine, threads in configs:
        how = ["-m", str(model), "--engine", engine, "--threads", str(threads)]
        blob, err_c, wall_c = charlstm("compress", *how, stdin=text, threads=threads)
        back, err_d, wall_d = charlstm("decompress", *how, stdin=blob, threads=threads)
        if back != text or (ours is not None and blob != ours):
            sys.exit(f"{engine}/{threads}: different bytes or a failed round trip")
        ours, err = blob, err or err_c
        timings.append((engine, threads, err_c, wall_c, err_d, wall_d))
    assert ours is not None
    print("| compressor | bytes | bits/char | vs evaluate's size | vs charlstm |")
    print("|---|---|---|---|---|")
    rows = [("charlstm compress", len(ours))]
    for name, cmd in EXTERNAL.items():
        if shutil.which(cmd[0]):
            done = subprocess.run(cmd, input=text, capture_output=True, check=True)
            rows.append((name, len(done.stdout)))
        else:
            print(f"({name}: not installed)", file=sys.stderr)
    for name, size in rows:
        print(
            f"| {name} | {size:,} | {8 * size / chars:.4f} | {size / implied - 1:+.2%} | "
            f"{size / len(ours) - 1:+.1%} |"
        )
    print(f"\n{err.strip().splitlines()[-1]}")
    if details:
        breakdown(model, text, implied)
    print(
        "\n| engine | threads | compress KB/s (coding / whole command) | "
        "decompress KB/s (coding / whole command) |"
    )
    print("|---|---|---|---|")
    kb = len(text) / 1000
    for engine, threads, err_c, wall_c, err_d, wall_d in timings:
        print(
            f"| {engine} | {threads or 'all'} | {kb / coded_seconds(err_c):.1f} / "
            f"{kb / wall_c:.1f} | {kb / coded_seconds(err_d):.1f} / {kb / wall_d:.1f} |"
        )
    if segments:
        engine, threads = configs[0]
        print(
            f"\n| segments | bytes | vs evaluate's size | compress KB/s ({engine}, "
            f"threads {threads or 'all'}) |"
        )
        print("|---|---|---|---|")
        how = ["-m", str(model), "--engine", engine, "--threads", str(threads)]
        for s in segments:
            blob, err_c, _ = charlstm("compress", *how, "--segments", str(s), stdin=text)
            print(
                f"| {s} | {len(blob):,} | {len(blob) / implied - 1:+.2%} | "
                f"{len(text) / 1000 / coded_seconds(err_c):.1f} |"
            )


def breakdown(model: Path, text: bytes, implied: float) -> None:
    import math

    import numpy as np
    import torch

    from charlstm.compress.codec import Codec
    from charlstm.compress.format import read_header, segment_count
    from charlstm.formats.checkpoint import read_checkpoint, resolve_checkpoint

    torch.set_num_threads(1)  # sizes only: exact on any thread count
    ckpt = read_checkpoint(resolve_checkpoint(model))
    net = ckpt.model()
    codec = Codec(net, ckpt.tokenizer)
    symbols, _ = codec.symbols(text)
    if (symbols == codec.escape).any():
        print("(breakdown skipped: the text has characters the model never saw)")
        return
    n, s = len(symbols), segment_count(len(symbols))
    lengths = n // s + (np.arange(s) < n % s)
    grid = np.full((s, int(lengths[0])), codec.exact.start_token, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for row, (a, ln) in enumerate(zip(starts, lengths, strict=True)):
        grid[row, :ln] = symbols[a : a + ln]
    float_bits = 0.0
    with torch.no_grad():
        for row, ln in enumerate(lengths):
            x = torch.from_numpy(np.concatenate([[codec.exact.start_token], grid[row, :ln]]))
            logits, _ = net(x[None, :-1])
            loss = torch.nn.functional.cross_entropy(logits[0].double(), x[1:], reduction="sum")
            float_bits += float(loss) / math.log(2)
    run, exact_bits = codec.exact.start(s), 0.0
    for t in range(int(lengths[0])):
        live = lengths > t
        freqs = run.frequencies()[live]  # the coder gives every symbol + 1 out of 2^24
        exact_bits -= np.log2((freqs[np.arange(live.sum()), grid[live, t]] + 1) / 2**24).sum()
        run.advance(grid[:, t])
    blob = codec.compress(text)
    head = read_header(blob).size
    payload = len(blob) - head
    print(
        f"\nbreakdown over {s} segments: evaluate implies {implied:,.0f} bytes; the float model "
        f"over the same segments {float_bits / 8:,.0f} ({float_bits / 8 / implied - 1:+.2%}); "
        f"the integer model {exact_bits / 8:,.0f} ({exact_bits / float_bits - 1:+.3%} on the "
        f"float model); coded payload {payload:,} ({payload - exact_bits / 8:+.0f}); header "
        f"{head} bytes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=CORPORA / "tinyshakespeare.txt")
    parser.add_argument("--model", type=Path, help="run folder or .pt trained on the corpus")
    parser.add_argument("--wiki-model", type=Path, help="run trained on wikitext2.valid.txt")
    parser.add_argument("--wikitext", action="store_true", help="train the wikitext-2 model")
    parser.add_argument("--wiki-only", action="store_true", help="skip the corpus's split")
    parser.add_argument("--breakdown", action="store_true", help="where the gap comes from")
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
        if not args.wiki_only:
            model = args.model or train(args.corpus, args.train_budget, work, "ts")
            text = args.corpus.read_text(encoding="utf-8")
            val = text[int(len(text) * 0.9) :].encode()  # the split `charlstm train` holds out
            label = f"{args.corpus.name}, last 10%"
            bench(model.resolve(), val, label, configs, args.segments, args.breakdown)
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
