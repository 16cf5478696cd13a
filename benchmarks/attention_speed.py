"""Sampling with --attention (#30): characters per second of one stream on the numpy engine,
beside the plain LSTM of the same size, and the time per character 1,000 and 20,000 characters
into the text (the memory is a rolling buffer: it must not grow).

    python benchmarks/attention_speed.py                       # 2×512, memory 1024
    python benchmarks/attention_speed.py --hidden 256 --memory 256 --repeats 9

Random weights (speed does not depend on training), a 65-token vocabulary, one BLAS thread
(set before numpy loads, as the CLI does). Each figure is the median of --repeats timings of
--chars steps; the goals are ≥ 0.7 of the plain LSTM's chars/s and the two positions within
20% of each other. Run it on a quiet machine: the figures are wall-clock times.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from charlstm.data.tokenizer import CharTokenizer  # noqa: E402
from charlstm.formats.model_file import Portable  # noqa: E402
from charlstm.generate.numpy_engine import NumpyStepper  # noqa: E402
from charlstm.model.language_model import LanguageModel, ModelConfig  # noqa: E402
from charlstm.model.weights import portable_weights  # noqa: E402

VOCAB = 65


def stepper(hidden: int, layers: int, memory: int) -> NumpyStepper:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=hidden, num_layers=layers, attention=memory)
    tok = CharTokenizer("".join(chr(0x100 + i) for i in range(VOCAB)))
    return NumpyStepper(Portable(cfg, tok, portable_weights(LanguageModel(cfg))))


def per_char(s: NumpyStepper, chars: int, repeats: int) -> float:
    """Median seconds per step over `repeats` runs of `chars` steps (the stream goes on)."""
    tokens = np.random.default_rng(0).integers(0, VOCAB, (repeats, chars))
    times = []
    for row in tokens:
        t0 = time.perf_counter()
        for t in row:
            s.step(t.reshape(1))
        times.append((time.perf_counter() - t0) / chars)
    return statistics.median(times)


def advance(s: NumpyStepper, to: int, at: int) -> int:
    for t in np.random.default_rng(1).integers(0, VOCAB, max(0, to - at)):
        s.step(t.reshape(1))
    return max(at, to)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--memory", type=int, default=1024, help="--attention M")
    parser.add_argument("--chars", type=int, default=500, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    size = f"{args.layers}×{args.hidden}"

    plain = stepper(args.hidden, args.layers, 0)
    plain.step(np.array([0]))
    base = per_char(plain, args.chars, args.repeats)
    s = stepper(args.hidden, args.layers, args.memory)
    at = advance(s, 1_000, 0)
    early = per_char(s, args.chars, args.repeats)
    at = advance(s, 20_000, at + args.chars * args.repeats)
    late = per_char(s, args.chars, args.repeats)
    print(f"numpy engine, one stream, {size}, memory {args.memory}, median of {args.repeats}")
    print(f"plain LSTM             {1 / base:>9,.0f} chars/s")
    print(f"with attention, 1,000  {1 / early:>9,.0f} chars/s  ({base / early:.2f} of the plain)")
    print(f"with attention, 20,000 {1 / late:>9,.0f} chars/s  (late/early time {late / early:.2f})")
    print(f"memory buffer          {s.state()[-1].shape} (M, B, H)")


if __name__ == "__main__":
    main()
