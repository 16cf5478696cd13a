"""Sampling speed: characters per second of charlstm's generator vs calling nn.LSTM per step.

    python benchmarks/sample_speed.py                 # 2×512 LSTM, 65-character vocabulary
    python benchmarks/sample_speed.py --hidden 256

Both paths run the same randomly initialised model (speed does not depend on training) on one
thread, in one process, alternating, and the median of the repeats is reported with the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from charlstm.model import LanguageModel, ModelConfig
from charlstm.sample import SampleConfig, choose_next, generate


def ours(model: LanguageModel, n: int, batch: int) -> float:
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in generate(model, torch.tensor([0]), SampleConfig(length=n), g, batch=batch):
        pass
    return n * batch / (time.perf_counter() - t0)


@torch.inference_mode()
def per_step_nn_lstm(model: LanguageModel, n: int, batch: int) -> float:
    """The obvious loop: model(ids (B, 1), state) for every new character."""
    g = torch.Generator().manual_seed(0)
    cfg = SampleConfig(length=n)
    token, state = torch.zeros(batch, dtype=torch.long), None
    t0 = time.perf_counter()
    for _ in range(n):
        logits, state = model(token[:, None], state)
        token = choose_next(logits[:, -1], cfg, g)
    return n * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--chars", type=int, default=2000, help="characters per timing")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = LanguageModel(
        ModelConfig(vocab_size=65, hidden_size=args.hidden, num_layers=args.layers)
    ).eval()
    print(f"{args.layers}×{args.hidden} LSTM, 1 thread, median of {args.repeats}")
    print("| streams | charlstm chars/s | nn.LSTM per step chars/s | ratio |")
    print("|---|---|---|---|")
    for batch in (1, 16):
        a, b = [], []
        for _ in range(args.repeats):
            a.append(ours(model, args.chars // batch, batch))
            b.append(per_step_nn_lstm(model, max(50, args.chars // batch // 10), batch))
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {batch} | {ma:,.0f} | {mb:,.0f} | {ma / mb:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
