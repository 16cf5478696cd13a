"""Training with --attention (#30): milliseconds per training step (forward, backward, AdamW) of
the LSTM with the head, beside the plain LSTM of the same size, in one process, interleaved.

    python benchmarks/attention_step.py                        # 2×256, M 256, 32 × 32, bf16
    python benchmarks/attention_step.py --precision fp32
    git show 8748c4d:charlstm/model/attention.py > /tmp/old_attention.py
    python benchmarks/attention_step.py --against /tmp/old_attention.py   # an older block too

The step is training's own (training/schedule.train_step and apply_step) on random ids, a
65-token vocabulary, the state and the memory carried from step to step. `--against FILE` adds a
row for another version of model/attention.py (its `Attention` class in the same model), with
the first steps' losses of each so a reader sees the two blocks compute the same thing. Each
figure is the median of --repeats rounds of --steps steps. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from charlstm.config import ModelConfig
from charlstm.model import language_model
from charlstm.training.schedule import apply_step, train_step


def stepper(args: argparse.Namespace, memory: int, block: type | None) -> Callable[[], float]:
    """One training step of a fresh model (seed 1) per call, returning its loss."""
    kept = language_model.Attention
    if block is not None:  # the model builds its head from the name it imported
        language_model.Attention = block
    try:
        torch.manual_seed(1)
        net = language_model.LanguageModel(
            ModelConfig(
                vocab_size=65, hidden_size=args.hidden, num_layers=args.layers, attention=memory
            )
        )
    finally:
        language_model.Attention = kept
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3)
    ids = torch.randint(
        0, 65, (args.batch, args.window + 1), generator=torch.Generator().manual_seed(0)
    )
    state = None

    def step() -> float:
        nonlocal state
        loss, state, _ = train_step(net, optimizer, None, ids[:, :-1], ids[:, 1:], state, 1.0,
                                    args.precision)  # fmt: skip
        apply_step(optimizer, None)
        return float(loss)

    return step


def load_block(path: Path) -> type:
    """The `Attention` class of another copy of model/attention.py."""
    spec = importlib.util.spec_from_file_location("other_attention", path)
    if not path.is_file() or spec is None or spec.loader is None:
        raise SystemExit(f"--against: no Python file at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "Attention"):
        raise SystemExit(f"--against: {path} has no Attention class")
    return module.Attention


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--memory", type=int, default=256, help="the head's M")
    parser.add_argument("--batch", type=int, default=32, help="B: streams")
    parser.add_argument("--window", type=int, default=32, help="T: characters per window")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's own)")
    parser.add_argument("--steps", type=int, default=8, help="steps per timed round")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--against", type=Path, help="another model/attention.py to time beside")
    args = parser.parse_args()
    for name in ("hidden", "layers", "memory", "batch", "window", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.threads < 0:
        parser.error("--threads must be 0 (torch's own) or more")
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = {"plain LSTM": stepper(args, 0, None), "with the head": stepper(args, args.memory, None)}
    if args.against is not None:
        rows[f"with the head of {args.against.name}"] = stepper(
            args, args.memory, load_block(args.against)
        )
    losses = {name: [step() for _ in range(3)] for name, step in rows.items()}  # also a warm-up
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, step in rows.items():  # interleaved: drift falls on every row alike
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps * 1e3)

    plain = statistics.median(times["plain LSTM"])
    print(
        f"{args.layers}×{args.hidden}, M = {args.memory}, {args.batch} × {args.window}, "
        f"{args.precision}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
        f"{platform.machine()}; median of {args.repeats} rounds of {args.steps} steps\n"
    )
    print("| model | ms per step | share of the plain LSTM's speed | first losses |")
    print("|---|---|---|---|")
    for name, series in times.items():
        ms = statistics.median(series)
        first = ", ".join(f"{v:.5f}" for v in losses[name])
        print(f"| {name} | {ms:.1f} | {plain / ms:.2f} | {first} |")


if __name__ == "__main__":
    main()
