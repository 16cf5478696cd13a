"""Training speed of one recurrent layer stack per cell: forward and backward of a window, the
best of a few repeats, in one process (so machine noise hits every cell alike).

    python benchmarks/layer_speed.py                            # lstm, gru, mingru, minlstm
    python benchmarks/layer_speed.py --cells lstm mingru --window 256 --threads 4

It times model/layers.make_recurrent's layer alone (no embedding, head or optimizer): the
fused nn.LSTM / nn.GRU against the log-space scan of the PARALLEL cells (model/scan.py).
"""

from __future__ import annotations

import argparse
import time

import torch

from charlstm.model.layers import make_recurrent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru", "mingru", "minlstm"])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--input", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.window, args.input)
    for cell in args.cells:
        layer = make_recurrent(cell, args.input, args.hidden, args.layers, 0.0)
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out, _ = layer(x)
            out.square().mean().backward()
            best = min(best, time.perf_counter() - t0)
        tokens = args.batch * args.window
        print(f"{cell:8s} {best * 1000:7.0f} ms a window  {tokens / best:9,.0f} tokens/s")


if __name__ == "__main__":
    main()
