"""Fuzz `charlstm decompress`: thousands of mutated .clz files, each refused in one line or decoded
exactly, with the time and memory each one took.

    python benchmarks/fuzz_clz.py                        # 5,000 cases, a tiny random model
    python benchmarks/fuzz_clz.py --cases 20000 --model checkpoints/RUN

Each case runs in process through the path the CLI takes (read_header, then Codec.decompress)
on a mutant of a valid file: bit flips, truncations, extensions, a header field set to zero, small,
huge or "negative" values under a valid CRC (as an attacker writes them), crafted segment tables,
other versions and flags, garbage words under a valid header. It reports how many were refused,
decoded (exactly: anything else is a failure) or ended otherwise (a traceback: a bug), the model
steps the worst case ran against its file's size, and the slowest case and the largest memory
peak (tracemalloc, which sees numpy's arrays). Exit status 1 if any case failed.
"""

from __future__ import annotations

import argparse
import collections
import struct
import sys
import time
import traceback
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from charlstm.compress.codec import Codec  # noqa: E402
from charlstm.compress.format import MAGIC, CompressError, leb128, read_header  # noqa: E402
from charlstm.data.tokenizer import CharTokenizer  # noqa: E402
from charlstm.model.language_model import LanguageModel, ModelConfig  # noqa: E402

CORPUS = HERE.parent.parent / "shared" / "corpora" / "tinyshakespeare.txt"
HUGE = [0, 1, 2, 127, 128, 255, 256, 257, 1023, 1024, 1025, 10**6, 10**8, 10**9, 2**31, 2**32,
        2**53, 2**63 - 1, 2**63, 2**64 - 1, 2**64 - 3, 2**70 - 1]  # fmt: skip


def craft(fp: bytes, numbers: list[int], version: int, flags: int, table: tuple[int, ...],
          checksum: bytes, payload: bytes) -> bytes:  # fmt: skip
    head = MAGIC + bytes([version, flags]) + fp + checksum
    head += b"".join(leb128(v) for v in [*numbers, *table])
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def mutant(blob: bytes, rng: np.random.Generator, fp: bytes) -> tuple[str, bytes]:
    """One random mutation of a valid file."""
    h = read_header(blob)
    payload = blob[h.size :]
    numbers = [h.length, h.tokens, h.segments, h.words]
    tabled = h.version >= 2 and bool(blob[5] & 1)
    table = tuple(2 * n + r for n, r in h.parts)
    kind = rng.choice(["flip", "flip", "flip", "truncate", "extend", "field", "field", "table",
                       "version", "words", "splice"])  # fmt: skip
    if kind == "flip":
        b = bytearray(blob)
        for at in rng.integers(0, len(b), size=int(rng.integers(1, 9))):
            b[at] ^= 1 << int(rng.integers(0, 8))
        return kind, bytes(b)
    if kind == "truncate":
        return kind, blob[: int(rng.integers(0, len(blob)))]
    if kind == "extend":
        return kind, blob + rng.bytes(int(rng.integers(1, 200)))
    if kind == "field":
        crafted = list(numbers)
        for field in rng.choice(4, size=int(rng.integers(1, 4)), replace=False):
            base = int(crafted[field])
            crafted[field] = int(rng.choice([*HUGE, base + 1, max(base - 1, 0), base * 2]))
        return kind, craft(fp, crafted, h.version, 1 if tabled else 0, table if tabled else (),
                           blob[14:22], payload)  # fmt: skip
    if kind == "table":
        s = int(rng.integers(1, 300))
        entries = rng.integers(0, 2 * max(h.tokens, 8) + 2, size=s)
        if rng.random() < 0.5:  # keep the sums right, so the header passes and decoding runs
            coded = [int(x) for x in rng.multinomial(h.tokens, [1 / s] * s)] if h.tokens else []
            entries = [2 * c if c else 2 * int(rng.integers(1, 50)) + 1 for c in coded] or [3]
        entries = tuple(int(e) for e in entries)
        raw = sum(e >> 1 for e in entries if e & 1)
        tokens = sum(e >> 1 for e in entries if not e & 1)
        return kind, craft(fp, [max(h.length, tokens + raw), tokens, len(entries), h.words], 2,
                           1, entries, blob[14:22],
                           payload[: 4 * h.words] + rng.bytes(min(raw, 1 << 16)))  # fmt: skip
    if kind == "version":
        version, flags = int(rng.integers(0, 256)), int(rng.choice([0, 1, 2, 0x81, 255]))
        return kind, craft(fp, numbers, version, flags, table if flags & 1 else (), blob[14:22],
                           payload)  # fmt: skip
    if kind == "words":
        words = rng.bytes(4 * h.words) if rng.random() < 0.8 else bytes(4 * h.words)
        return kind, blob[: h.size] + words + payload[4 * h.words :]
    # splice: a header claiming the most tokens its words allow, over garbage words
    w = int(rng.integers(0, 64))
    n = int(rng.integers(0, 1024 * w + 1))
    s = int(rng.integers(1, 257)) if n else 0
    return kind, craft(fp, [n + int(rng.integers(0, 100)), n, min(s, n), w], 2, 0, (),
                       blob[14:22], rng.bytes(4 * w))  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--model", type=Path, help="a checkpoint or run folder (default: a tiny "
                    "random 2×32 char model over the corpus's characters)")  # fmt: skip
    ap.add_argument("--engine", default="numpy", choices=["numpy", "torch"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    text = CORPUS.read_text(encoding="utf-8") if CORPUS.exists() else "ROMEO: but soft!\n" * 999
    if args.model:
        from charlstm.formats.checkpoint import read_checkpoint

        path = args.model / "best.pt" if args.model.is_dir() else args.model
        ckpt = read_checkpoint(path)
        codec = Codec(ckpt.model(), ckpt.tokenizer, engine=args.engine)
    else:
        tok = CharTokenizer.train(text)
        torch.manual_seed(args.seed)
        net = LanguageModel(ModelConfig(vocab_size=tok.vocab_size, hidden_size=32)).eval()
        codec = Codec(net, tok, engine=args.engine)
    rng = np.random.default_rng(args.seed)
    raw_text = text.encode()
    bases = [raw_text[1000:1400], "✓ 漢字 ünï\n".encode() + b"\xff\xfe\x00" + raw_text[:80],
             raw_text[:150] + rng.bytes(200) + raw_text[500:650], b"", rng.bytes(300),
             raw_text[5000:5200]]  # fmt: skip
    blobs = [codec.compress(d, segments=s) for d, s in
             zip(bases, [4, 2, 3, None, 2, 1], strict=True)]  # fmt: skip
    fp = codec.fingerprint()
    counts: collections.Counter[str] = collections.Counter()
    by_kind: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    slowest = (0.0, "")
    peak = (0, "")
    worst_ratio = (0.0, "")
    tracemalloc.start()
    t_all = time.perf_counter()
    for case in range(args.cases):
        k = case % len(bases)
        kind, blob = mutant(blobs[k], rng, fp)
        by_kind[kind] += 1
        steps: list[int] = []
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        try:
            read_header(blob)
            out = codec.decompress(blob, progress=lambda d, t, s=steps: s.append(d))
        except CompressError as e:
            counts["refused"] += 1
            if "\n" in str(e) or not str(e):
                failures.append(f"case {case} ({kind}): a message not one line: {e!r}")
        except Exception:  # a traceback: the bug this looks for
            counts["traceback"] += 1
            failures.append(f"case {case} ({kind}):\n{traceback.format_exc()}")
        else:
            counts["decoded"] += 1
            if out != bases[k]:
                failures.append(f"case {case} ({kind}): decoded to other bytes")
        dt = time.perf_counter() - t0
        mem = tracemalloc.get_traced_memory()[1]
        if steps:
            counts["ran the model"] += 1
            ratio = max(steps) / len(blob)
            if ratio > worst_ratio[0]:
                worst_ratio = (ratio, f"case {case} ({kind}, {len(blob)} bytes)")
        if dt > slowest[0]:
            slowest = (dt, f"case {case} ({kind}, {len(blob)} bytes)")
        if mem > peak[0]:
            peak = (mem, f"case {case} ({kind}, {len(blob)} bytes)")
    tracemalloc.stop()
    total = time.perf_counter() - t_all
    print(f"{args.cases:,} cases in {total:.1f}s ({args.engine}, model {args.model or 'random'})")
    print("kinds: " + ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())))
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"slowest case: {slowest[0] * 1000:.0f} ms, {slowest[1]}")
    print(f"largest memory peak: {peak[0] / 1e6:.2f} MB, {peak[1]}")
    print(f"most tokens decoded per file byte: {worst_ratio[0]:.1f}, {worst_ratio[1]}")
    print(f"failures: {len(failures)}")
    for f in failures[:20]:
        print(f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
