"""Budget-aware defaults: the model size, learning rate, dropout, batch and window that reach
the lowest validation loss in the time given, on the machine the run is on.

The rule (its sweeps are in BENCHMARKS.md, "Lower loss in less time"):
  1. Measure this machine's training speed for each rung of LADDER in turn, smallest first
     (warm-up, then the median of up to nine steps on random ids, at the run's batch, window
     and precision: 0.3-1.5 s a rung). Sizing as a whole gets SIZING_SHARE of the budget, and
     its clock, not a count of steps, ends each measurement and the climb: where even the first
     rung cannot be measured in that share, it is taken, with a note.
  2. Take the largest rung that still sees the training split at least MIN_EPOCHS times in the
     budget, and whose parameters do not outnumber the training tokens by more than
     MAX_PARAMS_PER_TOKEN (a bigger model only memorises a small corpus). A corpus too small
     for the first rung gets the largest of SMALL_LADDER under that cap instead.
  3. Measure the chosen size's speed at each batch × window of LAYOUT_WORTH (in the run's
     precision: where bf16 matrix units make big multiplies cheap, big batches gain most) and
     take the one that learns most per second: tokens/s × what a token is worth to training in
     that layout, measured at a fixed number of tokens (`choose_layout`).
  4. Dropout grows with the passes the chosen model will make (DROPOUT_BY_EPOCHS); an LSTM
     making 6 to 12 passes gets a stronger weight decay instead (weight_decay_for).
Every choice yields to its flag; the measuring time counts against the budget.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from charlstm.config import ModelConfig, TrainConfig
from charlstm.model.language_model import LanguageModel
from charlstm.training.ladder import (  # noqa: F401 (sizing.LADDER etc. stay patchable here)
    CELL_LR_SCALE,
    DROPOUT_BY_EPOCHS,
    LADDER,
    OTHER_CELLS_LR_SCALE,
    SMALL_LADDER,
    Rung,
)

# Without weight decay, at 135 s, 2×320 making 5.4 passes beat 2×256 making 6.3 (1.503 against
# 1.515), and 2×384 making 3.1 lost to both (1.535). Weight decay 0.1 lets a model use more
# passes: 2×256 making 8.9 then beat 2×320 making 4.8 (1.4745 against 1.4892).
MIN_EPOCHS = 6.0
# char-rnn's rule of thumb: parameters and training characters of the same order, else the
# model memorises the corpus.
MAX_PARAMS_PER_TOKEN = 4.0


# Step 3's layouts (B streams × T steps), and what a token is worth to training in each, relative
# to the best: exp(−(L − L_best) / s), from the final validation loss L of a 2×256 trained on the
# same 1.5M tokens of tiny-shakespeare in each layout (s = 0.143 nats per e-fold of tokens, from
# 32 × 64 at 0.75M and 1.5M tokens): one token here buys that many of the best layout's. At equal
# tokens, smaller batches make more optimizer steps (16 × 64 beat 32 × 64, which beat 64 × 64 and
# 128 × 64), and at equal batch tokens more streams of shorter windows learn more (128 × 16 beat
# 64 × 32, 32 × 64 and 16 × 128); BENCHMARKS.md, "Batch and window". Not measured beyond 1.5M
# tokens: longer runs may favour bigger batches.
LAYOUT_WORTH = {
    (32, 64): 0.728,  # 1.6202: the layout without a budget, measured with the size
    (32, 32): 1.000,  # 1.5750
    (128, 16): 0.949,  # 1.5824
    (16, 64): 0.853,  # 1.5977
    (64, 32): 0.825,  # 1.6025
    (64, 64): 0.620,  # 1.6431
}
# A layout needs this many windows per pass over the training split to be considered.
MIN_WINDOWS_PER_EPOCH = 8
# The share of the budget that measuring (steps 1 and 3) may take: a busy machine made it 54 s
# of a 20 s budget when each measurement ran a fixed number of steps (issue #27).
SIZING_SHARE = 0.1


@dataclass(frozen=True)
class Choice:
    rung: Rung
    dropout: float
    epochs: float  # passes over the training split the run should make
    rates: dict[str, float]  # measured tokens/s by rung name
    why: str  # one line for the user


@dataclass(frozen=True)
class Layout:
    batch: int  # B
    window: int  # T
    rate: float  # measured tokens/s
    rates: dict[str, float]  # measured tokens/s of every layout compared, "B×T" -> tokens/s
    why: str  # one line for the user


def dropout_for(epochs: float) -> float:
    return next(p for limit, p in DROPOUT_BY_EPOCHS if epochs < limit)


# AdamW's weight decay where the LSTM makes few passes (no dropout yet): 0.2 beat 0.1 at 2×256
# for 5,000 steps of 128 × 16 (1.4163 against 1.4227; 0.05 lost 0.03, 0.3 lost 0.015), and
# three 135 s runs each gave a median of 1.4188 against 1.4255 (BENCHMARKS.md, "Weight decay at
# the new learning rates"). Measured at 7.7-11.2 passes and for the LSTM only, so it applies
# from MIN_EPOCHS to FEW_PASSES: longer runs (dropout starts at 16), a big corpus seen only a few
# times (the built-in Shakespeare in 2 minutes, 3.1 passes, gave 1.4570 with it against 1.4460
# without, one run each), and the other cells (at other learning rates) keep TrainConfig's 0.1.
FEW_PASSES_WEIGHT_DECAY = 0.2
FEW_PASSES = 12.0


def weight_decay_for(epochs: float, cell: str, default: float) -> float:
    measured = cell == "lstm" and MIN_EPOCHS <= epochs < FEW_PASSES
    return FEW_PASSES_WEIGHT_DECAY if measured else default


def lr_for(hidden: int) -> float:
    """The learning rate of the rung nearest in size (for a --hidden given by the user)."""
    return min(LADDER, key=lambda r: abs(r.hidden - hidden)).lr


def cell_lr(rung: Rung, cell: str) -> float:
    """The rung's learning rate for `cell`."""
    return rung.lr * CELL_LR_SCALE.get(cell, OTHER_CELLS_LR_SCALE)


def choose(
    budget: float,
    train_tokens: int,
    rate: Callable[[Rung], float],
    params: Callable[[Rung], int],
    rungs: tuple[Rung, ...] = LADDER,
    small: tuple[Rung, ...] = SMALL_LADDER,
    out_of_time: Callable[[], bool] = lambda: False,
) -> Choice:
    """Apply the rule (steps 1, 2 and 4). `rate(rung)` measures tokens/s (called smallest
    first, and no further than needed); `params(rung)` counts its parameters. Pure given those
    two. `small` is taken from when the corpus is too small for rungs[0] (none: never)."""
    rates: dict[str, float] = {}
    cap = MAX_PARAMS_PER_TOKEN * train_tokens
    if small and params(rungs[0]) > cap:
        under = [r for r in small if params(r) <= cap]
        rung = under[-1] if under else small[0]
        rates[str(rung)] = rate(rung)
        epochs = budget * rates[str(rung)] / max(train_tokens, 1)
        per_token = params(rungs[0]) / max(train_tokens, 1)
        why = (f"a small corpus: {rungs[0]} would have {per_token:.0f}"
               f" parameters per training token (> {MAX_PARAMS_PER_TOKEN:g}); "
               + (f"{rung}, the largest size under that" if under else f"{rung}, the smallest")
               + f"; measured {rates[str(rung)]:,.0f} tok/s")  # fmt: skip
        return Choice(rung, dropout_for(epochs), epochs, rates, why)
    chosen, epochs, stop = rungs[0], 0.0, ""
    for i, rung in enumerate(rungs):
        if i and out_of_time():  # measuring more would eat the budget it sizes for
            stop = (f"no time to measure more sizes (sizing took its share of the budget, "
                    f"{SIZING_SHARE:.0%})")  # fmt: skip
            break
        if params(rung) > MAX_PARAMS_PER_TOKEN * train_tokens and i:
            stop = f"{rung} has more than {MAX_PARAMS_PER_TOKEN:g} parameters per training token"
            break
        rates[str(rung)] = rate(rung)
        e = budget * rates[str(rung)] / max(train_tokens, 1)
        if e < MIN_EPOCHS and i:
            stop = f"{rung} would make {e:.1f} passes (< {MIN_EPOCHS:g})"
            break
        chosen, epochs = rung, e
    speeds = ", ".join(f"{k} {v:,.0f} tok/s" for k, v in rates.items())
    why = f"measured {speeds}; {stop or 'the largest size'}"
    return Choice(chosen, dropout_for(epochs), epochs, rates, why)


def choose_layout(
    rate: Callable[[int, int], float],
    layouts: tuple[tuple[int, int], ...] = tuple(LAYOUT_WORTH),
    worth: dict[tuple[int, int], float] = LAYOUT_WORTH,
    out_of_time: Callable[[], bool] = lambda: False,
) -> Layout:
    """Step 3: the layout (B, T) that learns most per second, rate(B, T) × worth[B, T], where
    `rate(b, t)` measures tokens/s (each layout once, in the order given, the first always, the
    others while `out_of_time()` is False) and `worth` is what a token is worth to training in
    that layout. Pure given `rate` and `out_of_time`.

    The trade: a bigger batch makes more tokens per second (bigger matrix products use the
    machine better, bf16 matrix units above all) but fewer optimizer steps per token, which
    `worth` measures; and more streams of shorter windows fill the same multiply with less
    correlated text."""
    rates: dict[tuple[int, int], float] = {}
    for i, bt in enumerate(layouts):
        if i and out_of_time():
            break
        rates[bt] = rate(*bt)
    cut = len(rates) < len(layouts)
    layouts = tuple(rates)

    def pace(bt: tuple[int, int]) -> float:
        return rates[bt] * worth.get(bt, 1.0)

    best = max(layouts, key=pace)
    shown = {f"{b}×{t}": r for (b, t), r in rates.items()}
    if len(layouts) == 1:
        why = f"{best[0]}×{best[1]} as given"
    else:
        gain = pace(best) / pace(layouts[0])
        speeds = ", ".join(f"{k} {v:,.0f}" for k, v in shown.items())
        why = (f"measured {speeds} tok/s; {best[0]}×{best[1]} learns most per second "
               f"({gain:.2f}× {layouts[0][0]}×{layouts[0][1]}'s)")  # fmt: skip
    if cut:
        why += f"; no time to measure more layouts (sizing took its share, {SIZING_SHARE:.0%})"
    return Layout(best[0], best[1], rates[best], shown, why)


def fitting_layouts(
    train_tokens: int, batch: int | None = None, window: int | None = None
) -> tuple[tuple[int, int], ...]:
    """The layouts of LAYOUT_WORTH to compare: those agreeing with a given batch or window, with
    at least MIN_WINDOWS_PER_EPOCH windows in a pass over the training split."""
    fits = [(b, t) for b, t in LAYOUT_WORTH if (batch is None or b == batch)
            and (window is None or t == window)
            and b * t * MIN_WINDOWS_PER_EPOCH <= train_tokens]  # fmt: skip
    return tuple(fits)


def measure_rate(
    rung: Rung,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    device: torch.device,
    precision: str,
    steps: int = 9,
    warmup_seconds: float = 0.0,
    until: float | None = None,
) -> float:
    """Training tokens/s of `rung` here, as the run will train it (random ids, the run's batch,
    window, precision and optimizer, the state carried between windows): two warm-up steps (or
    more, for at least `warmup_seconds`), then the median of `steps` timed ones, all ending
    early at the time.perf_counter() reading `until` (`timed_steps`).

    Give the first size measured in a process a quarter second of warm-up: a process's first
    steps run at a third to a half of its steady speed (thread pools spinning up), which made
    two warm-up steps measure 2×256 at 44k tok/s where it then trained at 83k."""
    from charlstm.training.schedule import apply_step, make_optimizer, train_step

    cfg = sized(model_cfg, rung)
    b, t = train_cfg.batch_size, train_cfg.window
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = LanguageModel(cfg).to(device).train()
        optimizer = make_optimizer(model, train_cfg)
        ids = torch.randint(0, cfg.vocab_size, (b, t + 1), device=device)
        x, y = ids[:, :t], ids[:, 1:]
        state = None

        def step() -> float:
            nonlocal state
            start = time.perf_counter()
            _, state, _ = train_step(model, optimizer, None, x, y, state, train_cfg.clip, precision)
            apply_step(optimizer, None)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - start

        times = timed_steps(step, steps, warmup_seconds, until)
    return b * t / statistics.median(times)


def past(until: float) -> Callable[[], bool]:
    """A check that the time.perf_counter() clock has reached `until`."""
    return lambda: time.perf_counter() >= until


def timed_steps(
    step: Callable[[], float], steps: int, warmup_seconds: float, until: float | None
) -> list[float]:
    """The durations `step()` returns: two warm-up steps (or more, for `warmup_seconds`) left
    out, then `steps` timed ones; the clock passing `until` ends either part after the step it
    is in (a step cannot be cut). Where it ends the warm-up, the last warm-up step is returned:
    a slow guess, which is what a machine too slow to measure in time deserves."""

    late = past(until if until is not None else float("inf"))
    warm_from, warm = time.perf_counter(), 0.0
    for n in itertools.count(1):
        warm = step()
        if late():
            return [warm]
        if n >= 2 and time.perf_counter() - warm_from >= warmup_seconds:
            break
    times: list[float] = []
    while len(times) < steps and not (times and late()):
        times.append(step())
    return times


def count_parameters(rung: Rung, model_cfg: ModelConfig) -> int:
    return LanguageModel(sized(model_cfg, rung)).num_parameters()


def sized(model_cfg: ModelConfig, rung: Rung, **changes: object) -> ModelConfig:
    """The run's model settings at this rung's size (the embedding follows the size unless
    given in `changes`)."""
    return replace(model_cfg, hidden_size=rung.hidden, num_layers=rung.layers,
                   **{"embed_size": 0, **changes})  # fmt: skip
