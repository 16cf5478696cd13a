"""Sampling speed: characters per second of charlstm's generator vs calling nn.LSTM per step,
and of the `charlstm sample` command end to end, with its time to the first character.

    python benchmarks/sample_speed.py                 # 2×512 LSTM, 65-character vocabulary
    python benchmarks/sample_speed.py --hidden 256

In process: both paths run the same randomly initialised model (speed does not depend on
training) on one thread, alternating; the median of the repeats is reported with the ratio.
End to end: a 2×512 checkpoint (one training step on tiny-shakespeare) is sampled by the real
CLI in fresh processes; chars/s counts from the first character printed to the last, and the
time to the first character is set against a bare `python -c "import torch"`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from charlstm.config import SampleConfig
from charlstm.data.tokenizer import CharTokenizer
from charlstm.generate.choose import choose, seeded
from charlstm.generate.loop import Request, generate
from charlstm.generate.torch_engine import TorchStepper
from charlstm.model.language_model import LanguageModel, ModelConfig


def ours(model: LanguageModel, n: int, batch: int) -> float:
    """The loop every door runs (generate/loop.py), on the torch engine."""
    vocab = CharTokenizer("".join(chr(0x100 + i) for i in range(model.cfg.vocab_size)))
    request = Request(np.array([0]), SampleConfig(length=n), seed=0, n=batch)
    t0 = time.perf_counter()
    for _ in generate(TorchStepper(model.eval()), vocab, request):
        pass
    return n * batch / (time.perf_counter() - t0)


@torch.inference_mode()
def per_step_nn_lstm(model: LanguageModel, n: int, batch: int) -> float:
    """The obvious loop: model(ids (B, 1), state) for every new character."""
    g = seeded(0)
    cfg = SampleConfig(length=n)
    token, state = torch.zeros(batch, dtype=torch.long), None
    t0 = time.perf_counter()
    for _ in range(n):
        logits, state = model(token[:, None], state)
        token = torch.from_numpy(choose(logits[:, -1].numpy(), cfg, g.random(batch)))
    return n * batch / (time.perf_counter() - t0)


CORPUS = (
    Path(__file__).resolve().parent.parent.parent / "shared" / "corpora" / "tinyshakespeare.txt"
)


def first_and_total(cmd: list[str], cwd: Path) -> tuple[float, float, int]:
    """Seconds to the first byte on stdout, seconds to the end, and the characters printed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    t_first = time.perf_counter() - t0
    rest = proc.stdout.read()
    proc.wait()
    return t_first, time.perf_counter() - t0, len((first + rest).decode("utf-8"))


def end_to_end(hidden: int, layers: int, chars: int, repeats: int) -> None:
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [py, "-m", "charlstm", "train", str(CORPUS), "--steps", "1", "--hidden", str(hidden),
             "--layers", str(layers), "--name", "m", "-q"],
            cwd=work, check=True,
        )  # fmt: skip
        sample = [py, "-m", "charlstm", "sample", "-m", "checkpoints/m", "--seed", "1", "-q"]
        imports, single, many, firsts = [], [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([py, "-c", "import torch"], check=True)
            imports.append(time.perf_counter() - t0)
            t_first, total, n = first_and_total([*sample, "--length", str(chars)], work)
            firsts.append(t_first)
            single.append((n - 1) / (total - t_first))
            # Several samples print whole at the end: count from the single sample's first
            # character (start-up and prime done) to the end.
            _, total, n = first_and_total([*sample, "--length", str(chars // 4), "-N", "16"], work)
            many.append(16 * (chars // 4) / (total - t_first))
        imp, first = statistics.median(imports), statistics.median(firsts)
        print(f"\n`charlstm sample` end to end, {layers}×{hidden}, median of {repeats}:")
        print("| measure | value |")
        print("|---|---|")
        print(f"| one sample, chars/s (first char to last) | {statistics.median(single):,.0f} |")
        print(f"| -N 16, chars/s in aggregate (after start-up) | {statistics.median(many):,.0f} |")
        print(f"| launch to first char | {first:.2f} s |")
        print(f"| `python -c 'import torch'` | {imp:.2f} s |")
        print(f"| first char minus import torch | {first - imp:.2f} s |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--chars", type=int, default=2000, help="characters per timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cli-chars", type=int, default=20_000, help="chars per CLI sample")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, torch {torch.__version__}")
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
    end_to_end(args.hidden, args.layers, args.cli_chars, args.repeats)


if __name__ == "__main__":
    main()
