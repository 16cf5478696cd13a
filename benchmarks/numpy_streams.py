"""The numpy engine with two to four streams: each product as one gemm for all streams against
numpy_ops.matmul_calls (a gemv per stream for 2 or 3), side by side in one process.

    python benchmarks/numpy_streams.py                     # 2×256, the plain LSTM
    python benchmarks/numpy_streams.py --hidden 512
    python benchmarks/numpy_streams.py --attention 256     # with the head (numpy_attention.py)

OpenBLAS's gemm packs the whole matrix at every call, which for two or three rows costs more
than the rows' gemv calls. The "one gemm" stepper is the same stepper built while
matmul_calls is replaced by a single np.matmul (what the engine did before). Random weights, a
65-token vocabulary, one BLAS thread (set before numpy loads, as the CLI does); the median of
--rounds rounds of --steps steps, the two in turn. Run it on a quiet machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402

import numpy as np  # noqa: E402
from attention_speed import stepper  # noqa: E402

import charlstm.generate.numpy_attention as numpy_attention  # noqa: E402
import charlstm.generate.numpy_engine as numpy_engine  # noqa: E402
import charlstm.generate.numpy_ops as numpy_ops  # noqa: E402
from charlstm.generate.numpy_engine import NumpyStepper  # noqa: E402

USERS = (numpy_ops, numpy_engine, numpy_attention)  # the modules that call matmul_calls


def one_gemm(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> list:
    return [partial(np.matmul, x, w, out=out)]


def built(args: argparse.Namespace, streams: int, gemm: bool) -> NumpyStepper:
    """A stepper at `streams` streams, its calls planned now (with one gemm if `gemm`)."""
    kept = [m.matmul_calls for m in USERS]
    if gemm:
        for m in USERS:
            m.matmul_calls = one_gemm
    try:
        s = stepper(args.hidden, args.layers, args.attention)
        s.start(s.zero_state(streams))
    finally:
        for m, f in zip(USERS, kept, strict=True):
            m.matmul_calls = f
    return s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--attention", type=int, default=0, help="--attention M (0: none)")
    parser.add_argument("--steps", type=int, default=1000, help="steps per round")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    print(f"numpy engine, {args.layers}×{args.hidden}, attention {args.attention}, "
          f"median of {args.rounds} rounds of {args.steps} steps")  # fmt: skip
    print("| streams | one gemm, µs a step | matmul_calls, µs a step | ratio |")
    print("|---|---|---|---|")
    for streams in (2, 3, 4):
        gemm, ours = built(args, streams, True), built(args, streams, False)
        tokens = np.random.default_rng(0).integers(0, 65, (args.steps, streams))
        for s in (gemm, ours):  # warm up
            for t in tokens[:200]:
                s.step(t)
        times: dict[int, list[float]] = {id(gemm): [], id(ours): []}
        for _ in range(args.rounds):
            for s in (gemm, ours):
                t0 = time.perf_counter()
                for t in tokens:
                    s.step(t)
                times[id(s)].append((time.perf_counter() - t0) / args.steps * 1e6)
        a, b = (statistics.median(times[id(s)]) for s in (gemm, ours))
        assert np.allclose(gemm.step(tokens[0]), ours.step(tokens[0]), atol=1e-4)
        print(f"| {streams} | {a:,.1f} | {b:,.1f} | {b / a:.2f} |", flush=True)


if __name__ == "__main__":
    main()
