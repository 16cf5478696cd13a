"""Constrained sampling's speed: characters per second of one stream on the numpy engine, free
and under a pattern (a name pattern, a JSON schema), on the same char model; the goal is a
ratio of at least 0.8 (issue #29).

    python benchmarks/constrained_speed.py                  # 2×512 LSTM, tinyshakespeare's chars
    python benchmarks/constrained_speed.py --hidden 128 --train 10s --chars 3000 --repeats 3

The model: a 2×512 checkpoint trained for --train (60 s) on the start of tinyshakespeare plus a
few JSON records (so that its vocabulary spells JSON). A step's speed does not depend on
training, but a sample's length does: an untrained model ends a name after 2 or 3 letters, and
deciding to end costs a step of its own.

Constrained: samples one after another from seeds 0, 1, ... (each ends when it matches and the
model chooses to end), until --chars characters are made, every sample's set-up counted; the
automaton is built before the clock starts (once per pattern, then kept: generate/constrain.py).
Free: as many samples of the same lengths, unconstrained (the same work less the pattern). The
medians of --repeats runs, the two alternating, and their ratio. A short sample pays a step to
decide its end that a free sample of its length does not (a 6-letter name: 6 steps, not 5); a
list of names, one long stream, shows the cost of the pattern alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one stream: as `charlstm sample` sets it
import charlstm  # noqa: E402 (after the thread count: numpy reads it when it loads)

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
NAME = r"[A-Z][a-z]{1,11}( [A-Z][a-z]{1,11})?"
NAMES = r"([A-Z][a-z]{1,11}\n){1,100000}"  # a list of names: one long stream
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"},
                   "lines": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
    "required": ["name", "age", "lines"],
}  # fmt: skip
RECORDS = '{"name": "Romeo", "age": 16, "lines": ["But soft!", "What light?"]}\n' * 20


def constrained(model: charlstm.Model, chars: int, steer: dict) -> tuple[float, list[int]]:
    """Characters a second of samples under `steer`, one after another from one stream until
    `chars` are made, and each sample's length."""
    lengths: list[int] = []
    t0 = time.perf_counter()
    while sum(lengths) < chars:
        pieces = model.generate("\n", length=chars - sum(lengths), seed=len(lengths), **steer)
        lengths.append(sum(len(p) for p in pieces))
    return sum(lengths) / (time.perf_counter() - t0), lengths


def free(model: charlstm.Model, lengths: list[int]) -> float:
    """Characters a second of free samples of these lengths, one after another."""
    t0 = time.perf_counter()
    made = sum(sum(len(p) for p in model.generate("\n", length=n, seed=i))
               for i, n in enumerate(lengths))  # fmt: skip
    return made / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--chars", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train", default="60s", help="training budget: a model that has "
                        "learnt something makes names of a realistic length")
    args = parser.parse_args()
    print("$ python benchmarks/constrained_speed.py " + " ".join(sys.argv[1:]))
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "text.txt"
        text.write_text(CORPUS.read_text(encoding="utf-8")[:200_000] + RECORDS, encoding="utf-8")
        charlstm.train([str(text)], name="m", checkpoints=Path(tmp) / "ck", hidden=args.hidden,
                       layers=args.layers, budget=args.train, threads=1)  # fmt: skip
        model = charlstm.load(Path(tmp) / "ck" / "m", engine="numpy")
        ways = {"name pattern": {"regex": NAME}, "JSON schema": {"json_schema": SCHEMA},
                "list of names": {"regex": NAMES}}
        for steer in ways.values():  # warm up, and build each automaton once
            constrained(model, 200, steer)
        runs: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
        for _ in range(args.repeats):
            for way, steer in ways.items():
                speed, lengths = constrained(model, args.chars, steer)
                runs[way].append((free(model, lengths), speed))
    print(f"{args.layers}×{args.hidden} LSTM, {model.tokenizer.vocab_size} chars, numpy engine, "
          f"one stream, {args.chars:,} chars a run, median of {args.repeats}; free: samples of "
          "the same lengths as the constrained ones")  # fmt: skip
    for way, pairs in runs.items():
        unbound, bound = (statistics.median(x) for x in zip(*pairs, strict=True))
        ratios = ", ".join(f"{b / f:.2f}" for f, b in pairs)
        print(f"  {way:14} free {unbound:8,.0f} chars/s   constrained {bound:8,.0f} chars/s   "
              f"ratio {bound / unbound:.2f}   (runs' ratios: {ratios})")

if __name__ == "__main__":
    main()
