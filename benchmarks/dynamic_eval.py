"""Static against dynamic evaluation on the validation split of a trained run, side by side.

    python benchmarks/dynamic_eval.py checkpoints/RUN                  # the defaults
    python benchmarks/dynamic_eval.py checkpoints/RUN --sweep --tokens 30000   # choose settings
    python benchmarks/dynamic_eval.py checkpoints/RUN --rules sgd --lrs 1e-2,3e-2 --decays 0

The validation split is the run's own (its tokens.npy after the training split), scored once
statically (one sequential pass, the state carried, as `charlstm evaluate --streams 1` does) and
then dynamically (`charlstm evaluate --dynamic`: one pass that takes a gradient step after each
segment) for every combination of --rules, --segments, --lrs and --decays (--sweep: a grid
around the defaults). --tokens N scores only the first N tokens (a quicker sweep; the figures
then differ from the whole split's). The checkpoint is never written.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from charlstm.api import load
from charlstm.config import DYNAMIC_LR, DynamicConfig
from charlstm.evaluation.dynamic import dynamic_losses, gradient_scale
from charlstm.evaluation.exact import token_losses


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", help="run folder (its best.pt and tokens.npy)")
    parser.add_argument("--tokens", type=int, default=0, help="score only the first N (0 = all)")
    parser.add_argument("--rules", default=DynamicConfig.rule)
    parser.add_argument("--segments", default=str(DynamicConfig.segment))
    parser.add_argument("--lrs", default=f"{DYNAMIC_LR['rms']:g}")
    parser.add_argument("--decays", default=f"{DynamicConfig.decay:g}")
    parser.add_argument("--sweep", action="store_true", help="a grid around the defaults")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.sweep:
        args.segments, args.lrs, args.decays = "10,20,50", "1e-4,3e-4,1e-3,3e-3", "0,1e-3,1e-2"
    model = load(args.run)
    corpus = model.meta.get("corpus") or {}
    ids = np.load(model.path.parent / "tokens.npy", mmap_mode="r")
    train = model.training_ids()
    if train is None:
        sys.exit("the run folder has no usable tokens.npy")
    val = np.asarray(ids[len(train) :])
    if args.tokens:
        val = val[: args.tokens + 1]
    n = len(val) - 1
    print(f"`python benchmarks/dynamic_eval.py {shlex.join(sys.argv[1:])}`\n")
    cfg = model.config
    chars = corpus.get("chars", 0)
    print(f"{model.path}: {cfg.cell} {cfg.num_layers}×{cfg.hidden_size}, trained "
          f"{model.meta.get('step', 0):,} steps; validation split {n:,} predictions "
          f"(corpus {chars:,} characters); {args.threads} thread(s)\n")  # fmt: skip
    t0 = time.perf_counter()
    static = float(token_losses(model.net, val).mean())
    print("| evaluation | rule | segment | lr | decay | nats/token | vs static | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| static | | | | | {static:.4f} | | {time.perf_counter() - t0:.1f} |", flush=True)
    scales: dict[tuple[str, int], list | None] = {}
    grid = itertools.product(args.rules.split(","), (int(v) for v in args.segments.split(",")),
                             floats(args.lrs), floats(args.decays))  # fmt: skip
    for rule, segment, lr, decay in grid:
        dyn = replace(DynamicConfig(), rule=rule, segment=segment, lr=lr, decay=decay)
        t0 = time.perf_counter()
        if (rule, segment) not in scales:
            scales[rule, segment] = gradient_scale(model.net, train, dyn) if rule == "rms" else None
        loss = float(dynamic_losses(model.net, val, dyn, scales[rule, segment]).mean())
        print(f"| dynamic | {rule} | {segment} | {lr:g} | {decay:g} | {loss:.4f} | "
              f"{loss - static:+.4f} | {time.perf_counter() - t0:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
