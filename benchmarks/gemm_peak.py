"""How much of this CPU's matrix-multiply peak does training use? fp32 and bf16 GEMM peaks via
torch (oneDNN's kernels: bf16 runs on AVX512-BF16 or AMX where the CPU has them), and the
training speed of charlstm's models as a share of them.

    python benchmarks/gemm_peak.py                       # all cores, 2×256 and 2×512
    python benchmarks/gemm_peak.py --threads 1 --sizes 2x256 --batches 32,128
    python benchmarks/gemm_peak.py --quick               # a smoke run: small GEMMs, few repeats

1. GEMM peaks: C = A @ B for square matrices (1024 … 4096) and for the shapes an LSTM step
   multiplies ((B, H) @ (H, 4H) and a window's input projection (B·T, E) @ (E, 4H)), in fp32
   and bf16; the median of several timed repeats after a warm-up, as TFLOP/s = 2·M·N·K / s.
   The peak of a precision is its best shape.
2. Training: tokens/s of the real training step (sizing.measure_rate: forward, backward,
   clipping, AdamW, the state carried) at each size, batch and precision. One token costs
   about 6 × (the parameters in the matrices it is multiplied by) FLOPs: 2 forward, 4 backward
   (the gates' input and recurrent matrices of every layer and the output layer; the embedding
   is a lookup). That × tokens/s is the achieved TFLOP/s, shown against both peaks.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time

import torch

from charlstm.config import ModelConfig, TrainConfig
from charlstm.device import cpu_has_bf16
from charlstm.training import sizing


def gemm_tflops(m: int, k: int, n: int, dtype: torch.dtype, repeats: int) -> float:
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    out = torch.empty(m, n, dtype=dtype)
    calls = max(1, int(2e8 / (2 * m * k * n)))  # enough calls per timing to be measurable
    for _ in range(2):
        torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b, out=out)
        times.append((time.perf_counter() - start) / calls)
    return 2 * m * k * n / statistics.median(times) / 1e12


def matrix_params(hidden: int, layers: int, embed: int, vocab: int) -> int:
    """Parameters a token is multiplied by in an LSTM language model (gates and head)."""
    gates = sum(4 * hidden * ((embed if k == 0 else hidden) + hidden) for k in range(layers))
    return gates + vocab * hidden


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    parser.add_argument("--sizes", default="2x256,2x512", help="LAYERSxHIDDEN, comma-separated")
    parser.add_argument("--batches", default="32,128")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--vocab", type=int, default=65, help="tiny-shakespeare's characters")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    repeats = 3 if args.quick else args.repeats
    precisions = ["fp32", *(["bf16"] if cpu_has_bf16() else [])]
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    print(f"`python benchmarks/gemm_peak.py {shlex.join(sys.argv[1:])}`\n")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} "
          f"thread(s); torch {torch.__version__}, CPU capability {capability}, oneDNN "
          f"{'on' if torch.backends.mkldnn.is_available() else 'off'}; bf16 instructions: "
          f"{'yes' if cpu_has_bf16() else 'no'}\n")  # fmt: skip

    square = [512, 1024] if args.quick else [1024, 2048, 4096]
    shapes = [(n, n, n) for n in square]
    for h in (256, 512):
        for b in (32, 128):
            shapes.append((b, h, 4 * h))  # a step's recurrent multiply
        shapes.append((32 * 64, 128, 4 * h))  # a window's input projection
    print("| M × K × N | " + " | ".join(f"{p} TFLOP/s" for p in precisions) + " |")
    print("|---|" + "---|" * len(precisions))
    peak = dict.fromkeys(precisions, 0.0)
    for m, k, n in shapes:
        row = []
        for p in precisions:
            v = gemm_tflops(m, k, n, dtypes[p], repeats)
            peak[p] = max(peak[p], v)
            row.append(f"{v:.3f}")
        print(f"| {m} × {k} × {n} | " + " | ".join(row) + " |", flush=True)
    print("\npeaks: " + ", ".join(f"{p} {v:.3f} TFLOP/s" for p, v in peak.items()) + "\n")

    print("| model | precision | B × T | tokens/s | achieved TFLOP/s | of fp32 peak "
          "| of bf16 peak |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        layers, hidden = (int(v) for v in size.split("x"))
        mc = ModelConfig(vocab_size=args.vocab, cell=args.cell)
        embed = sizing.sized(mc, sizing.Rung(hidden, layers, 1e-2)).embed_size
        flops_per_token = 6 * matrix_params(hidden, layers, embed, args.vocab)
        for p in precisions:
            for b in (int(v) for v in args.batches.split(",")):
                tc = TrainConfig(batch_size=b, window=args.window)
                rate = sizing.measure_rate(
                    sizing.Rung(hidden, layers, 1e-2), mc, tc, torch.device("cpu"), p,
                    steps=3 if args.quick else 9, warmup_seconds=0.5,
                )  # fmt: skip
                achieved = rate * flops_per_token / 1e12
                shares = " | ".join(f"{achieved / peak[q]:.0%}" if q in peak else "—"
                                    for q in ("fp32", "bf16"))  # fmt: skip
                print(f"| {layers}×{hidden} {args.cell} | {p} | {b} × {args.window} | "
                      f"{rate:,.0f} | {achieved:.3f} | {shares} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
