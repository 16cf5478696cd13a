"""Which cells carry information over a long distance? A synthetic recall task, every cell.

    python benchmarks/long_range.py                             # 7 cells × d = 10, 50, 200
    python benchmarks/long_range.py --cells mogrifier,slstm     # the two cells after 2017
    python benchmarks/long_range.py --steps 50 --distances 10   # a quick smoke run
    python benchmarks/long_range.py --cells lstm --attention 0,1024 --distances 200,1000
                                    # the LSTM beside the LSTM with --attention 1024 (#30)

The corpus is a run of records, each a key, d characters of noise, `=`, and the key again:

    C ljgpaofkbm = C \n        (d = 10; written here with spaces, the records have none)
    ^ one of 8 keys (A-H), uniform
      ^^^^^^^^^^ d letters drawn uniformly from a-p, independent of everything: pure noise
                 ^ `=` after exactly d letters
                   ^ the key again: the only character that needs memory of d + 1 steps back

Chance at the recall is 1/8. For every (cell, distance) the benchmark trains one small model
(charlstm's own LanguageModel) for a fixed number of optimizer steps with charlstm's recipe:
B contiguous streams cut into T-step windows, the state carried and detached between windows,
AdamW, warm-up then cosine decay, gradient norm clipped at 1. It then reports, on fresh records:

- task accuracy: how often the argmax after `=` is the key;
- recall loss: cross-entropy at that position alone (chance: ln 8 = 2.079 nats);
- validation loss over every character, beside its floor (the entropy of the keys and the
  noise; the `=`, the recalled key and the newline are all predictable, the `=` by counting).

A fixed step count (not wall time) keeps the results independent of machine load. Progress goes
to stderr, the Markdown tables to stdout. The defaults (1 layer × 64 units, 2,000 steps of
8 streams × 256 characters, lr 1e-2) are sized for about a quarter of an hour on one CPU
thread; at a fixed time, fewer streams and more steps measured better than the reverse. With a
256-step window, 96% / 80% / 21% of the recalls at d = 10 / 50 / 200 have their key inside
the same window, where gradient can reach it. `--mix` trains one model per cell on all the
distances shuffled together instead.

`--attention M1,M2,...` trains each cell once per memory M (0: without attention; otherwise
charlstm's --attention M, SHA-RNN's head over the last M outputs, model/attention.py), rows
named "cell +attn M". A recall at distance d needs M ≥ d + 1; the memory is carried (and
detached) between windows like the state, so a key a window or more back is reached by the
head, not by gradient through the recurrence.

`--trace N` prints, every N steps, the head's mean weight on the key's slot at each `=` (uniform
is 1/(M + 1)): whether the head is finding the key. With the head, lr 3e-3 learnt the recall at
d = 200 for 5 of 8 seeds against 1 of 8 at the default 1e-2, and lr 1e-3 with 3,000 steps for
13 of 16, each of them at d = 1,000 too; trained with `--mix` on distances 150-200, 14 of 16
(BENCHMARKS.md).

One learning rate serves every cell, and lr 1e-2 suits the gated cells better than the plain
RNN: at the defaults the RNN stays at chance even at d = 10, but reaches 71% there with
`--lr 3e-3` (still chance at d = 50). Compare the RNN at a lower lr before blaming the cell.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from charlstm.config import CELLS, TrainConfig
from charlstm.data.batches import fit_layout, window_batch
from charlstm.model.language_model import LanguageModel, ModelConfig
from charlstm.model.layers import detach_state
from charlstm.training.schedule import learning_rate, make_optimizer

KEYS = "ABCDEFGH"  # what must be recalled
NOISE = "abcdefghijklmnop"  # filler: disjoint from the keys, so it cannot leak the key
VOCAB = sorted(KEYS + NOISE + "=\n")
STOI = {ch: i for i, ch in enumerate(VOCAB)}
KEY_IDS = np.array([STOI[ch] for ch in KEYS])
NOISE_IDS = np.array([STOI[ch] for ch in NOISE])
EQ, NL = STOI["="], STOI["\n"]


def make_records(rng: np.random.Generator, n: int, distance: int) -> np.ndarray:
    """n records as one flat id array: key, `distance` noise letters, `=`, key, newline."""
    keys = KEY_IDS[rng.integers(0, len(KEYS), n)]
    rec = np.empty((n, distance + 4), dtype=np.int64)  # (n, d + 4)
    rec[:, 0] = keys
    rec[:, 1 : distance + 1] = NOISE_IDS[rng.integers(0, len(NOISE), (n, distance))]
    rec[:, distance + 1] = EQ
    rec[:, distance + 2] = keys
    rec[:, distance + 3] = NL
    return rec.reshape(-1)


def make_mixed(rng: np.random.Generator, n: int, distances: list[int]) -> np.ndarray:
    """n records in random order, each with a distance drawn uniformly from `distances`."""
    which = rng.integers(0, len(distances), n)
    blocks = {
        k: make_records(rng, int((which == k).sum()), d).reshape(-1, d + 4)
        for k, d in enumerate(distances)
    }
    taken = dict.fromkeys(blocks, 0)
    rows = []
    for k in which:
        rows.append(blocks[k][taken[k]])
        taken[k] += 1
    return np.concatenate(rows)


def loss_floor(distance: int) -> float:
    """The best possible nats/char: only the key and the noise letters are unpredictable."""
    return (math.log(len(KEYS)) + distance * math.log(len(NOISE))) / (distance + 4)


def bptt_coverage(distance: int, window: int) -> float:
    """Fraction of recalls whose key lies in the same training window, so that gradient can reach
    it; the rest must be learned from records that happen to fall inside one window."""
    # The key is read at step p and predicted (from the input `=`) at step p + d + 1.
    return max(0.0, (window - distance - 1) / window)


def variant(cell: str, memory: int) -> str:
    """A row's name: the cell, and its --attention memory when it has one."""
    return f"{cell} +attn {memory}" if memory else cell


def train_one(
    cell: str, distances: list[int], args: argparse.Namespace, memory: int = 0
) -> list[dict[str, Any]]:
    """Train one model on the recall task at `distances` (records of every distance, shuffled,
    when there are several) and evaluate it at each distance on fresh records; `memory` M > 0
    adds --attention M."""
    cfg = TrainConfig(
        batch_size=args.batch,
        window=args.window,
        lr=args.lr,
        warmup_steps=min(50, max(1, args.steps // 10)),
        steps=args.steps,
        seed=args.seed,
    )
    # The same data for every cell at a distance; training and validation records are disjoint
    # draws from separate generators.
    rng = np.random.default_rng([args.seed, *distances, 0])
    # Enough records that training reads every character once: one epoch of `steps` windows.
    need = cfg.batch_size * (cfg.steps + 1) * cfg.window + 2
    mean_len = sum(distances) / len(distances) + 4
    train_ids = make_mixed(rng, int(need / mean_len * 1.2) + 1, distances)[:need]
    assert len(train_ids) == need
    layout, _ = fit_layout(len(train_ids), cfg.batch_size, cfg.window)
    assert layout.windows_per_epoch >= cfg.steps, layout

    label = "+".join(map(str, distances))
    torch.manual_seed(args.seed)
    model_cfg = ModelConfig(
        vocab_size=len(VOCAB), cell=cell, hidden_size=args.hidden, num_layers=args.layers,
        attention=memory,
    )  # fmt: skip
    cell = variant(cell, memory)  # the row's name from here on
    model = LanguageModel(model_cfg)
    optimizer = make_optimizer(model, cfg)
    model.train()
    weights = watch_head(model) if memory and args.trace else None
    state = None
    t0 = time.perf_counter()
    recent: list[float] = []
    for step in range(cfg.steps):
        x, y = window_batch(train_ids, layout, 0, step)  # (B, T) each
        lr = learning_rate(cfg, step, step / cfg.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits, state = model(x, state)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        optimizer.step()
        state = detach_state(state)
        recent.append(loss.item())
        if not math.isfinite(recent[-1]):
            raise RuntimeError(f"{cell} d={label}: loss became {recent[-1]} at step {step}")
        if (step + 1) % max(1, cfg.steps // 5) == 0 or step + 1 == cfg.steps:
            print(
                f"  {cell:<8} d={label:<4} step {step + 1:>5}/{cfg.steps}  "
                f"train loss {sum(recent) / len(recent):.4f}  ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            recent = []
        if weights is not None and (step + 1) % args.trace == 0:
            trace(model, weights[-1], x, distances, f"{cell} d={label} step {step + 1}")
    train_seconds = time.perf_counter() - t0
    common = {"cell": cell, "trained_on": distances, "parameters": model.num_parameters(),
              "train_seconds": round(train_seconds, 2),
              "final_train_loss": loss.item()}  # fmt: skip
    results = [{**common, "distance": d, **evaluate(model, d, args)} for d in distances]
    for d, wide in args.test_at:  # longer recalls than trained on, the same weights
        tested = model
        if memory:  # the head's parameters do not depend on M: widen its reach, keep them
            tested = LanguageModel(dataclasses.replace(model_cfg, attention=wide))
            tested.load_state_dict(model.state_dict())
        results.append({**common, "distance": d, "memory_at_test": wide if memory else 0,
                        **evaluate(tested, d, args)})  # fmt: skip
    return results


def watch_head(model: LanguageModel) -> list[torch.Tensor]:
    """The head's attention weights (B, T, M + T) of the latest window, in a one-item list that
    hooks on the block keep current (the model's forward does not return them)."""
    latest: list[torch.Tensor] = []

    def keep(_: object, args: tuple, out: tuple) -> None:
        latest[:] = [out[2].detach()]

    model.attend.register_forward_pre_hook(
        lambda _, args, kwargs: (args, {**kwargs, "weights": True}), with_kwargs=True
    )
    model.attend.register_forward_hook(keep)
    return latest


@torch.no_grad()
def trace(model: LanguageModel, w: torch.Tensor, x: torch.Tensor, distances: list[int],
          label: str) -> None:  # fmt: skip
    """--trace's line: at the `=`s of the window, the head's mean weight on the key's slot
    (d + 1 back, in reach when d < M; main allows one distance per model) and the offsets back
    that get the most (0 is the `=` itself; d + 3 and d + 4: the last record's key copy, `=`)."""
    d, m = distances[0], model.cfg.attention
    at = (x == EQ).nonzero().tolist()
    if d + 1 > m or not at:  # the key out of the head's reach, or no recall in this window
        return
    by_offset = torch.stack([w[b, i, i : m + i + 1].flip(0) for b, i in at]).mean(0)  # (M + 1,)
    top = by_offset.topk(3)
    pairs = zip(top.indices.tolist(), top.values.tolist(), strict=True)
    most = ", ".join(f"{o} back {v:.3f}" for o, v in pairs)
    gate = model.attend.value_gate().abs().mean().item()
    print(f"  {label}: weight on the key {by_offset[d + 1]:.4f} (uniform {1 / (m + 1):.4f}) over "
          f"{len(at)} recalls; most: {most}; value gate mean |g| {gate:.3f}",
          file=sys.stderr, flush=True)  # fmt: skip


@torch.no_grad()
def evaluate(model: LanguageModel, distance: int, args: argparse.Namespace) -> dict[str, float]:
    """Loss and recall accuracy on fresh records, in streams that each begin at a record.

        stream s:  \\n | key noise... = key \\n | key noise... = key \\n | ...
                      '-- warm-up, not scored --'

    Training never starts from a zero state after its first window, so each stream's first
    record only warms the state up (scoring it would add ~1 nat/char on that record); the
    state is then carried through the stream in chunks, as charlstm's evaluation does. With
    --attention M the warm-up also fills the memory with M outputs of a warmed state: the
    outputs of a stream's first characters (from the zero state, which training meets once,
    at its first window) would otherwise stay in reach M characters longer, and some trained
    heads read them badly (one measured: +3.3 nats/char over the next record).
    """
    rng = np.random.default_rng([args.seed, distance, 1])
    warm = 1 + -(-model.cfg.attention // (distance + 4))  # records: 1, + M's worth
    per_stream = -(-args.val_records // args.val_streams) + warm  # ceil, + the warm-up
    rows = [
        np.concatenate([[NL], make_records(rng, per_stream, distance)])
        for _ in range(args.val_streams)
    ]
    ids = torch.from_numpy(np.stack(rows))  # (S, N * (d + 4) + 1)
    x, y = ids[:, :-1], ids[:, 1:].clone()
    y[:, : warm * (distance + 4)] = -100  # the warm-up records' targets: ignored
    model.eval()
    state = None
    losses, recall_losses, hits = [], [], []
    for start in range(0, x.shape[1], 1024):
        xc, yc = x[:, start : start + 1024], y[:, start : start + 1024]
        logits, state = model(xc, state)  # (S, t, V)
        ce = F.cross_entropy(logits.transpose(1, 2), yc, reduction="none")  # (S, t)
        losses.append(ce[yc != -100])
        at = (xc == EQ) & (yc != -100)  # the recall positions: the input is `=`, the target the key
        recall_losses.append(ce[at])
        hits.append(logits.argmax(-1)[at] == yc[at])
    model.train()
    hit = torch.cat(hits)
    return {
        "val_loss": torch.cat(losses).mean().item(),
        "val_floor": loss_floor(distance),
        "recall_loss": torch.cat(recall_losses).mean().item(),
        "accuracy": hit.float().mean().item(),
        "recalls": hit.numel(),
    }


def markdown(results: list[dict[str, Any]], cells: list[str], distances: list[int]) -> str:
    by = {(r["cell"], r["distance"]): r for r in results}
    missing = {"accuracy": math.nan, "val_loss": math.nan, "recall_loss": math.nan}
    head = "| cell | " + " | ".join(f"d={d}" for d in distances) + " |"
    rule = "|---|" + "---|" * len(distances)

    def table(title: str, cellfmt: Any, extra: list[str] | None = None) -> list[str]:
        lines = [title, "", head, rule]
        for cell in cells:
            lines.append(
                f"| {cell} | " + " | ".join(cellfmt(by.get((cell, d), missing)) for d in distances)
                + " |"
            )
        return [*lines, *(extra or []), ""]

    floor = "| *floor* | " + " | ".join(f"*{loss_floor(d):.4f}*" for d in distances) + " |"
    chance = "| *chance* | " + " | ".join(f"*{1 / len(KEYS):.1%}*" for _ in distances) + " |"
    chance_loss = "| *chance* | " + " | ".join(f"*{math.log(len(KEYS)):.3f}*" for _ in distances)
    out = [
        *table(
            "Task accuracy (argmax after `=` is the key):",
            lambda r: f"{r['accuracy']:.1%}",
            [chance],
        ),  # fmt: skip
        *table(
            "Validation loss, nats/char over all characters:",
            lambda r: f"{r['val_loss']:.4f}",
            [floor],
        ),  # fmt: skip
        *table(
            "Recall loss, nats at the position after `=` alone:",
            lambda r: f"{r['recall_loss']:.3f}",
            [chance_loss + " |"],
        ),  # fmt: skip
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated cells")
    parser.add_argument("--distances", default="10,50,200", help="comma-separated distances d")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps per model")
    parser.add_argument("--hidden", type=int, default=64, help="units per layer")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8, help="B: parallel training streams")
    parser.add_argument("--window", type=int, default=256, help="T: truncated-BPTT window")
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate")
    parser.add_argument("--val-records", type=int, default=512, help="validation records")
    parser.add_argument("--val-streams", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument(
        "--mix",
        action="store_true",
        help="one model per cell on all distances shuffled together, instead of one per distance",
    )
    parser.add_argument(
        "--attention", default="0", help="comma-separated --attention memories M (0: none)"
    )
    parser.add_argument(
        "--test-at",
        default="",
        help="D:M,...: also test each trained model on records of distance D, its head's memory "
        "widened to M (the same weights; a model without the head is tested as it is)",
    )
    parser.add_argument(
        "--trace",
        type=int,
        default=0,
        help="with --attention: every N steps, the head's mean weight on the key's slot at the "
        "window's `=`s, the offsets back that get the most, and its value gate (does the head "
        "find the key?)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, help="also write every result to this file")
    parser.add_argument(
        "--jobs", type=int, default=1, help="train this many models at once, in processes"
    )
    args = parser.parse_args()
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    distances = [int(d) for d in args.distances.split(",")]
    memories = [int(m) for m in args.attention.split(",")]
    args.test_at = [tuple(int(v) for v in pair.split(":")) for pair in args.test_at.split(",")
                    if pair]  # fmt: skip
    for cell in cells:
        if cell not in CELLS:
            parser.error(f"unknown cell {cell!r}; choose from {', '.join(CELLS)}")
    if min(distances) < 1:
        parser.error("distances must be positive")
    if args.trace < 0 or (args.trace and (args.mix or not any(memories))):
        parser.error("--trace N needs N ≥ 0, an --attention memory and one distance per model "
                     "(no --mix)")  # fmt: skip

    torch.set_num_threads(args.threads)
    command = "python benchmarks/long_range.py " + shlex.join(sys.argv[1:])
    for d in distances:
        print(
            f"d={d}: {bptt_coverage(d, args.window):.0%} of training recalls have their key "
            f"inside the same {args.window}-step window",
            file=sys.stderr,
        )
    results = []
    t0 = time.perf_counter()
    jobs = (
        [(c, distances, m) for c in cells for m in memories]
        if args.mix
        else [(c, [d], m) for d in distances for c in cells for m in memories]
    )
    if args.jobs > 1:  # each process trains whole models on its own thread(s)
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, initializer=torch.set_num_threads,
                                 initargs=(args.threads,)) as pool:  # fmt: skip
            cells_, trained, mems = zip(*jobs, strict=True)
            done = list(pool.map(train_one, cells_, trained, [args] * len(jobs), mems))
    else:
        done = [train_one(cell, trained_on, args, m) for cell, trained_on, m in jobs]
    for per_job in done:
        for r in per_job:
            print(
                f"{r['cell']} d={r['distance']}: accuracy {r['accuracy']:.1%}, recall loss "
                f"{r['recall_loss']:.3f}, val loss {r['val_loss']:.4f} "
                f"(floor {r['val_floor']:.4f}), {r['train_seconds']:.0f} s"
                + (f"; tested with M = {r['memory_at_test']}" if r.get("memory_at_test") else ""),
                file=sys.stderr,
                flush=True,
            )
            results.append(r)
    total = time.perf_counter() - t0

    mode = "one model per cell on all distances" if args.mix else "one model per cell and distance"
    print(f"`{command}`\n")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{platform.machine()}; {args.layers} layer(s) × {args.hidden} units, "
        f"{args.steps} steps of {args.batch} × {args.window} characters, lr {args.lr:g}, "
        f"seed {args.seed}; {mode}; {total:.0f} s in all\n"
    )
    tested = distances + [d for d, _ in args.test_at if d not in distances]
    if args.test_at:
        print("Tested beyond training (`--test-at`): " + ", ".join(
            f"d = {d} with the head's memory widened to M = {m}" for d, m in args.test_at) + "\n")
    print(markdown(results, [variant(c, m) for c in cells for m in memories], tested))
    if args.json:
        meta = {"command": command, "torch": torch.__version__, "threads": args.threads}
        args.json.write_text(json.dumps({**meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
