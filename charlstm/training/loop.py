"""The training loop: AdamW, warm-up then cosine decay, gradient clipping, truncated BPTT over
B streams, validation on a schedule, checkpoints, resume, and stopping by budget/steps/epochs.

The loop returns values and reports events through a callback; it never prints.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlstm.config import TrainConfig
from charlstm.data.batches import (
    StreamLayout,
    epoch_offset,
    fit_layout,
    window_batch,
)
from charlstm.data.tokens import CorpusInfo
from charlstm.device import autocast, grad_scaler
from charlstm.errors import CharlstmError
from charlstm.evaluation.exact import EvalResult, loss_total
from charlstm.export.convert import write_model_file
from charlstm.files import write_atomic
from charlstm.formats.checkpoint import save_checkpoint
from charlstm.formats.checks import PORTABLE_NAME
from charlstm.formats.model_file import no_portable_form
from charlstm.model.language_model import LanguageModel, ModelConfig
from charlstm.model.layers import State, detach_state
from charlstm.training import distributed
from charlstm.training.distributed import World

Report = Callable[[str, dict[str, Any]], None]  # (event, data): "note", "start", "progress", "eval"


class TrainingDiverged(CharlstmError):
    """The loss became NaN or exploded; the message says what to try."""


class TrainingOutOfMemory(CharlstmError):
    """A step did not fit in memory; the message says what was saved and what to try."""


def _out_of_memory(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, torch.OutOfMemoryError) or "allocate" in text and "memory" in text


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:120] if lines else type(e).__name__


def _save_last(run: Run) -> bool:
    """Write last.pt for where the run stands; False if even that fails."""
    try:
        save_checkpoint(run.checkpoint(with_resume=True), run.run_dir / "last.pt")
        return True
    except (CharlstmError, RuntimeError, MemoryError):
        return False


@dataclass
class Position:
    """Where training stands; saved in last.pt so a resumed run replays the same batches."""

    step: int = 0
    epoch: int = 0
    window: int = 0  # next window of the current epoch
    tokens_seen: int = 0
    elapsed: float = 0.0  # seconds of training so far, over all sessions
    train_seconds: float = 0.0  # of which in training steps (not validating): for tokens/s
    best_val_loss: float = math.inf
    # Seconds of the budget held back for the final validation when this was saved: a budget
    # run has reached its limit when elapsed + reserve does (the loop's own test).
    reserve: float = 0.0


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of the global RNG for one training step on one rank."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over `warmup_steps`, then cosine from lr to lr * min_lr_ratio as progress
    (fraction of the run done, by steps, epochs or wall clock) goes from 0 to 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def progress_of(
    cfg: TrainConfig, pos: Position, layout: StreamLayout, reserve: float = 0.0
) -> float:
    """Fraction of the run done: the largest of the limits' fractions (whichever ends first).
    `reserve` seconds of the budget count as spent already (the last validation's)."""
    parts = [0.0]
    if cfg.steps:
        parts.append(pos.step / cfg.steps)
    if cfg.epochs:
        parts.append(pos.step / (cfg.epochs * layout.windows_per_epoch))
    if cfg.budget:
        parts.append((pos.elapsed + reserve) / cfg.budget)
    return max(parts)


RECORD_EVERY = 0.02  # of a run, between training-loss records in the metrics
# The most of a budget one validation may take: a validation split that would take longer (at
# the speed measured) is cut to the tokens that fit, once, at the run's first validation, and
# every later validation (a resumed one too: it is saved as --val-tokens) scores the same part.
VALIDATION_SHARE = 0.05
# The budget's end is held back by the final validation's predicted time and its saving, times
# this (a busy machine's speed varies from one second to the next).
RESERVE_MARGIN = 1.25
MIN_VAL_TOKENS = 1000


def make_optimizer(model: LanguageModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Decay weight matrices only; biases and gains keep their scale.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr)
    # The fused kernel: one launch for all parameters on a GPU (not available everywhere).
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=fused or None)


def train_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    x: torch.Tensor,
    y: torch.Tensor,
    state: State | None,
    clip: float,
    precision: str,
) -> tuple[torch.Tensor, State, torch.Tensor]:
    """Forward and backward over one window (B, T), the gradients clipped to `clip`: returns
    the mean loss, the new state (detached: truncated BPTT) and the gradient norm. The caller
    checks the loss, then applies the step with `apply_step`."""
    with autocast(x.device, precision):
        losses, new_state = net(x, state, y)  # (B, T) nats
    loss = losses.float().mean()
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()  # under DDP this also averages the gradients over the ranks
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
    return loss.detach(), detach_state(new_state), grad_norm


def apply_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is not None:
        scaler.step(optimizer)  # skips the step if fp16 gradients overflowed
        scaler.update()
    else:
        optimizer.step()


@dataclass
class KeepEval:
    """A text scored at every validation beside the validation split: for a fine-tuned model,
    its base's domain, so the loss of the old skill shows as it happens (--keep-eval)."""

    ids: np.ndarray
    chars: int  # characters the predicted tokens spell: what its bits/char divide by
    sources: list[str]


@dataclass
class Run:
    """Everything a training session works on; checkpoint() turns it into a file's dict."""

    model: LanguageModel
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    tokenizer: dict[str, Any]
    train_ids: np.ndarray
    val_ids: np.ndarray
    corpus: CorpusInfo
    run_dir: Path
    pos: Position = field(default_factory=Position)
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one record per validation
    curve: list[dict[str, Any]] = field(default_factory=list)  # the training loss, steadily
    parent: dict[str, Any] | None = None  # the run it was fine-tuned from
    keep: KeepEval | None = None
    optimizer: torch.optim.Optimizer | None = None
    rnn_state: State | None = None  # this rank's streams only
    world: World = field(default_factory=World)  # the processes and the device
    precision: str = "fp32"
    timing: _Timing | None = None  # the session's clock and speeds (set by fit)

    def checkpoint(
        self, *, with_resume: bool, full_state: list[torch.Tensor] | None = None
    ) -> dict[str, Any]:
        """The checkpoint's dict, tensors on the CPU so it loads anywhere. `full_state` is the
        carried state of all B streams (gathered from every rank)."""
        ckpt: dict[str, Any] = {
            "model_config": asdict(self.model_cfg),
            "train_config": asdict(self.train_cfg),
            "tokenizer": self.tokenizer,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "metrics": list(self.metrics),
            "train_curve": list(self.curve),
            "parent": self.parent,
            "keep_eval": None
            if self.keep is None
            else {
                "sources": self.keep.sources,
                "chars": self.keep.chars,
                "tokens": len(self.keep.ids),
            },
            "corpus": asdict(self.corpus),
            "step": self.pos.step,
            "tokens_seen": self.pos.tokens_seen,
            "best_val_loss": self.pos.best_val_loss,
        }
        if with_resume:
            assert self.optimizer is not None
            state = list(self.rnn_state or ()) if full_state is None else full_state
            ckpt["resume"] = {
                "position": asdict(self.pos),
                "optimizer": self.optimizer.state_dict(),
                "rnn_state": [s.detach().cpu() for s in state],
                "precision": self.precision,  # a resume keeps it unless told otherwise
            }
        return ckpt


def fit(
    run: Run,
    *,
    report: Report = lambda event, data: None,
    should_stop: Callable[[], bool] = lambda: False,
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train until the budget, step or epoch limit (whichever first), or until should_stop().

    Saves last.pt at every validation and at the end, best.pt whenever validation improves.
    Returns the summary. Raises TrainingDiverged when the loss goes NaN or explodes.

    With several processes (run.world), each trains its share of the B streams under DDP;
    all ranks take the same steps and stop together, and only rank 0 writes files.
    """
    cfg, model, world = run.train_cfg, run.model, run.world
    device = world.device
    began = time.perf_counter()
    layout, notes = fit_layout(len(run.train_ids), cfg.batch_size, cfg.window)
    for note in notes:
        report("note", {"message": note})
    if layout.batch_size % world.size:
        raise distributed.DistributedError(
            f"{layout.batch_size} streams do not divide among {world.size} processes; "
            f"use a --batch-size that is a multiple of {world.size}"
        )
    rows = world.rows(layout.batch_size)  # this rank's streams
    model.to(device)
    net: torch.nn.Module = model
    if world.active:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    run.optimizer = make_optimizer(model, cfg)
    scaler = grad_scaler(device, run.precision)
    if resume is not None:
        run.pos = Position(**resume["position"])
        run.optimizer.load_state_dict(resume["optimizer"])
        # The file's weight decay yields to the run's (a resume may change it); the learning
        # rate is set every step.
        run.optimizer.param_groups[0]["weight_decay"] = cfg.weight_decay
        # The file holds all B streams' state; take this rank's rows.
        run.rnn_state = tuple(s[:, rows].to(device) for s in resume["rnn_state"]) or None
    pos = run.pos
    resumed_at = pos.step if resume is not None else None
    eval_every = cfg.eval_every
    # An explosion is growth: past max(10, 3 ln V) and twice where this session started. A
    # fine-tune onto new characters starts far above the first (they start rare, on purpose).
    explode_at = max(10.0, 3.0 * math.log(run.model_cfg.vocab_size))
    first_step = pos.step
    report(
        "start",
        {
            "parameters": model.num_parameters(),
            "vocab_size": run.model_cfg.vocab_size,
            "streams": layout.batch_size,
            "window": layout.window,
            "tokens_per_step": layout.batch_size * layout.window,
            "windows_per_epoch": layout.windows_per_epoch,
            "train_tokens": len(run.train_ids),
            "val_tokens": len(run.val_ids),
            "resumed_at": resumed_at,
            "limits": {"budget": cfg.budget, "steps": cfg.steps, "epochs": cfg.epochs},
            "where": f"{device}"
            + (f" × {world.size} processes" if world.active else "")
            + (f" · {run.precision}" if run.precision != "fp32" else ""),
        },
    )

    model.train()
    offset: int | None = None
    last_eval_step = pos.step
    last_eval_decile = int(progress_of(cfg, pos, layout) * 10)
    last_eval_at, last_eval_cost = pos.elapsed, 0.0
    # From fit's start: building the model for DDP and loading the state count too.
    session_start = began - pos.elapsed
    # Every decision that ends the loop or calls a collective is taken from figures all ranks
    # share: rank 0's clock, the summed loss, the stop requests of all ranks, rank 0's
    # validation and saving times (clock() and the all-reduce of each step below).
    timing = _Timing(world, session_start, pos, began)
    timing.tokens_per_step = layout.batch_size * layout.window
    run.timing = timing
    window_start, window_tokens = time.perf_counter(), 0
    stop_reason = "limit reached"
    loss_value = math.nan
    # The training loss is recorded at a steady cadence (every RECORD_EVERY of the run),
    # averaged since the last record, so that even a short run has a curve to plot.
    next_record = (int(progress_of(cfg, pos, layout) / RECORD_EVERY) + 1) * RECORD_EVERY
    recorded_sum, recorded_n = 0.0, 0

    # Stop requests travel in each step's all-reduce; this one covers a request made before
    # the first step.
    stop_requested = distributed.sum_across(world, [float(should_stop())])[0] > 0
    pos.reserve = timing.reserve(run)
    # A budget covers the last validation too: the loop ends when only its cost is left.
    while progress_of(cfg, pos, layout, reserve=pos.reserve) < 1.0:
        # Stop between steps, before any of the next window's random numbers are drawn, so
        # last.pt holds exactly where an uninterrupted run stands; every rank stops alike.
        if stop_requested:
            stop_reason = "interrupted"
            break
        step_start = time.perf_counter()
        # Dropout and weight-drop masks are a pure function of (seed, step, rank): a resumed
        # run draws the masks the uninterrupted one drew, and each rank draws its own.
        torch.manual_seed(step_seed(cfg.seed, pos.step, world.rank))
        if offset is None or pos.window == 0:
            offset = epoch_offset(cfg.seed, pos.epoch, layout, len(run.train_ids))
            if pos.window == 0:
                run.rnn_state = None  # streams jumped back to their starts: forget
        x, y = window_batch(run.train_ids, layout, offset, pos.window, rows)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if run.rnn_state is not None and cfg.state_reset > 0:
            run.rnn_state = _reset_some(run.rnn_state, cfg, pos.step, layout.batch_size, rows)
        lr = learning_rate(cfg, pos.step, progress_of(cfg, pos, layout))
        for group in run.optimizer.param_groups:
            group["lr"] = lr

        try:
            loss, state, grad_norm = train_step(
                net, run.optimizer, scaler, x, y, run.rnn_state, cfg.clip, run.precision
            )
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not _out_of_memory(e):
                raise
            # Nothing of this step was applied yet: last.pt can hold exactly where the run is.
            saved = not world.active and _save_last(run)
            raise TrainingOutOfMemory(
                f"out of memory at step {pos.step + 1} ({_first_line(e)}); "
                + (
                    f"last.pt holds step {pos.step}: resume with --resume {run.run_dir}"
                    if saved
                    else "the last validation's last.pt is kept"
                )
                + "; a smaller --batch-size or --window needs less"
            ) from None
        # One small all-reduce: the mean loss, rank 0's clock and any rank's stop request, so
        # every rank takes the same decisions.
        loss_value, elapsed, stops, timing.step_seconds = distributed.sum_across(
            world,
            [
                loss.item() / world.size,
                time.perf_counter() - session_start if world.is_main else 0.0,
                float(should_stop()),
                timing.own_step_seconds if world.is_main else 0.0,  # up to the last step
            ],
        )
        if pos.step == first_step and math.isfinite(loss_value):
            explode_at = max(explode_at, 2.0 * loss_value)
        stop_requested = stops > 0
        timing.steps_timed = timing.steps
        if not math.isfinite(loss_value) or loss_value > explode_at:
            what = "NaN" if math.isnan(loss_value) else f"{loss_value:.3g} (exploded)"
            kept = "the last good checkpoint is kept" if run.metrics else "no checkpoint was made"
            raise TrainingDiverged(
                f"the training loss became {what} at step {pos.step + 1}; {kept}. "
                f"Try a lower --lr (now {cfg.lr:g}) or --clip (now {cfg.clip:g})"
            )
        apply_step(run.optimizer, scaler)
        run.rnn_state = state

        pos.step += 1
        pos.window += 1
        if pos.window >= layout.windows_per_epoch:
            pos.epoch, pos.window = pos.epoch + 1, 0
        pos.tokens_seen += x.numel() * world.size
        window_tokens += x.numel() * world.size
        pos.elapsed = elapsed
        timing.steps += 1
        pos.reserve = timing.reserve(run)  # from shared figures: the same on every rank
        progress = progress_of(cfg, pos, layout)

        now = time.perf_counter()
        if now - window_start >= 0.5:
            report(
                "progress",
                {
                    "step": pos.step,
                    "loss": loss_value,
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "tokens_per_s": window_tokens / (now - window_start),
                    "progress": min(progress, 1.0),
                    "elapsed": pos.elapsed,
                    "epoch": pos.epoch + pos.window / layout.windows_per_epoch,
                },
            )
            window_start, window_tokens = now, 0

        pos.train_seconds += time.perf_counter() - step_start
        timing.own_step_seconds += time.perf_counter() - step_start
        recorded_sum, recorded_n = recorded_sum + loss_value, recorded_n + 1
        if progress >= next_record:
            run.curve.append({"step": pos.step, "elapsed": round(pos.elapsed, 3),
                              "train_loss": recorded_sum / recorded_n})  # fmt: skip
            recorded_sum, recorded_n = 0.0, 0
            next_record = (int(progress / RECORD_EVERY) + 1) * RECORD_EVERY
        decile = int(progress * 10)
        # On multiples of eval_every (not "since the last"), so a resumed run validates at the
        # same steps as an uninterrupted one.
        # Up to ten validations a run by default, but never more than ~2% of the time in them:
        # each costs training time the budget could have spent (the best model is almost always
        # the last, as the learning rate reaches its floor), and a big validation split or a
        # word vocabulary makes each one costly.
        due = (
            pos.step % eval_every == 0
            if eval_every
            else decile > last_eval_decile and pos.elapsed - last_eval_at >= 49 * last_eval_cost
        )
        # Under a budget, only where it and the final one still fit.
        fits = progress_of(cfg, pos, layout, reserve=pos.reserve + timing.eval_cost(run)) < 1.0
        # Under a budget, the first after a few steps: their speed sizes the validation.
        fits = fits and (timing.steps >= 8 or bool(run.metrics))
        if due and progress < 1.0 and (fits or not cfg.budget) and not stop_requested:
            last_eval_cost = _validate(run, loss_value, report)
            last_eval_step, last_eval_decile, last_eval_at = pos.step, decile, pos.elapsed
            # Validation time counts against the budget but not against tokens/s.
            window_start, window_tokens = time.perf_counter(), 0
            # Every rank holds the same summed figures, so all stop together.
            if cfg.patience and stale_validations(run.metrics) >= cfg.patience:
                stop_reason = f"no better validation in the last {cfg.patience} (--patience)"
                break

    timing.loop_end = time.perf_counter()
    if pos.step > last_eval_step or not run.metrics:
        _validate(run, loss_value, report, final=True)
    saving = time.perf_counter()
    if world.is_main:
        _write_run_json(run, finished=stop_reason != "interrupted")
    timing.saving += time.perf_counter() - saving
    scored = [m for m in run.metrics if m.get("val_loss") is not None]
    best_record = min(scored, key=lambda m: m["val_loss"], default=None)
    best = best_record["val_loss"] if best_record else None
    return {
        "stop_reason": stop_reason,
        "steps": pos.step,
        "epochs": pos.epoch + pos.window / layout.windows_per_epoch,
        "tokens_seen": pos.tokens_seen,
        "elapsed": pos.elapsed,
        # Over training steps alone: validations count against the budget, not here.
        "tokens_per_s": pos.tokens_seen / pos.train_seconds if pos.train_seconds > 0 else None,
        "parameters": model.num_parameters(),
        "best_val_loss": best,
        "best_val_bpc": best_record["val_bpc"] if best_record else None,
        "val_losses": [m["val_loss"] for m in scored],
        "keep_losses": [m["keep_loss"] for m in run.metrics if m.get("keep_loss") is not None],
        "tokenizer": run.tokenizer.get("kind", "char"),
        "last_train_loss": loss_value,
        "run_dir": str(run.run_dir),
        "device": str(device),
        "processes": world.size,
        "precision": run.precision,
        "peak_gpu_memory_mb": (
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        ),
        # This session's seconds, part by part (rank 0's clock): the summary adds them up.
        "session_seconds": timing.parts(),
        "resumed_at_step": resumed_at,
        "val_tokens_scored": len(run.val_ids) - 1 if len(run.val_ids) >= 2 else 0,
    }


class _Timing:
    """A session's clock as every rank sees it (rank 0's), the speeds that predict what a
    validation will cost, and where the session's seconds went (for the summary)."""

    def __init__(self, world: World, session_start: float, pos: Position, began: float) -> None:
        self.world, self.start, self.pos = world, session_start, pos
        self.began = began  # fit's start (this rank's clock)
        self.elapsed_at_start = pos.elapsed
        self.tokens_per_step = 0  # all ranks
        self.steps = 0  # this session's
        self.steps_timed, self.step_seconds = 0, 0.0  # rank 0's time in those steps (shared)
        self.own_step_seconds = 0.0  # this rank's, not yet shared
        self.eval_rate = 0.0  # tokens/s of the last validation (rank 0's)
        self.save_seconds = 0.0  # of the last checkpoint saving (rank 0's, shared at the next)
        self.eval_seconds = 0.0  # this session's validations, scoring only (rank 0's)
        self.last_save = 0.0  # rank 0's own, not yet shared
        self.validating = self.final = self.saving = 0.0  # reporting only (this rank's clock)
        self.loop_end: float | None = None

    def clock(self) -> float:
        """Rank 0's elapsed seconds, on every rank (a collective: call it on all)."""
        now = time.perf_counter() - self.start if self.world.is_main else 0.0
        return distributed.sum_across(self.world, [now])[0]

    def train_rate(self) -> float:
        """Tokens/s of training this session (all ranks), from figures every rank shares."""
        if not self.steps_timed or self.step_seconds <= 0:
            return 0.0
        return self.steps_timed * self.tokens_per_step / self.step_seconds

    def eval_cost(self, run: Run) -> float:
        """Predicted seconds of one validation: at its last measured speed, else at the
        training speed (a validation step costs about a third of a training step); before the
        first one, of the part _fit_validation will keep."""
        rate = self.eval_rate or self.train_rate()
        if rate <= 0:
            return 0.0
        val = max(len(run.val_ids) - 1, 0)
        if not run.metrics:
            val = min(val, _val_cap(run, rate))
        return (val + (len(run.keep.ids) - 1 if run.keep else 0)) / rate

    def reserve(self, run: Run) -> float:
        """What the budget holds back for the final validation and its saving."""
        if not run.train_cfg.budget:
            return 0.0
        return RESERVE_MARGIN * (self.eval_cost(run) + self.save_seconds)

    def parts(self) -> dict[str, float]:
        end = self.loop_end if self.loop_end is not None else time.perf_counter()
        return {
            "training": round(end - self.began - self.validating, 3),
            "validating": round(self.validating, 3),
            "final_validation": round(self.final, 3),
            "saving": round(self.saving, 3),
        }


def _val_cap(run: Run, rate: float) -> int | float:
    """The validation tokens one validation can score in VALIDATION_SHARE of the budget at
    `rate` tokens/s (no cap without a budget)."""
    if not run.train_cfg.budget:
        return math.inf
    return max(MIN_VAL_TOKENS, int(rate * VALIDATION_SHARE * run.train_cfg.budget))


def _fit_validation(run: Run, timing: _Timing, report: Report) -> None:
    """At a budget run's first validation: cut the validation split to what one validation can
    score in VALIDATION_SHARE of the budget, and keep that cut for the run (as --val-tokens)."""
    n = len(run.val_ids)
    rate = timing.eval_rate or timing.train_rate()
    if rate <= 0 or n < 2:
        return
    cap = _val_cap(run, rate)
    if cap >= n:
        return
    assert isinstance(cap, int)
    from charlstm.data.tokenizer import tokenizer_from_dict
    from charlstm.data.tokens import spelled_chars

    run.val_ids = run.val_ids[:cap]
    run.corpus.val_chars = spelled_chars(tokenizer_from_dict(run.tokenizer), run.val_ids)
    run.train_cfg = replace(run.train_cfg, val_tokens=cap)
    report("note", {"message": (
        f"validating on the first {cap:,} of {n:,} validation tokens: all of them would take "
        f"~{n / rate:.1f}s at this speed, over {VALIDATION_SHARE:.0%} of the budget")})  # fmt: skip


def stale_validations(metrics: list[dict[str, Any]]) -> int:
    """How many validations have come since the best one (0: the last was the best)."""
    scored = [m["val_loss"] for m in metrics if m.get("val_loss") is not None]
    if not scored:
        return 0
    return len(scored) - 1 - scored.index(min(scored))


def _validate(run: Run, train_loss: float, report: Report, final: bool = False) -> float:
    """Evaluate the validation split, log a metrics line, write last.pt and maybe best.pt;
    returns the seconds the scoring took. Under a budget, the split is cut to fit the budget at
    the first validation (_fit_validation), and a final validation that cannot fit in what is
    left of the budget is skipped with a note.

    Under DDP each rank scores its share of the validation streams and the sums are added, so
    the figure equals a single process's; rank 0 writes the files. Every decision here is taken
    from figures all ranks share."""
    pos, world = run.pos, run.world
    timing = run.timing or _Timing(world, time.perf_counter(), pos, time.perf_counter())
    t0 = time.perf_counter()
    if not run.metrics:
        _fit_validation(run, timing, report)
    cfg = run.train_cfg
    record: dict[str, Any] = {
        "step": pos.step,
        "tokens_seen": pos.tokens_seen,
        "elapsed": round(pos.elapsed, 3),
        "train_loss": train_loss,
        "val_loss": None,
    }
    skipped = None
    if final and cfg.budget:
        left, cost = cfg.budget - timing.clock(), timing.eval_cost(run)
        # Within a little of what is left: the bound is max(2 s, 3% of the budget).
        if cost > left + max(0.5, 0.01 * cfg.budget):
            skipped = f"~{cost:.1f}s, with {max(left, 0.0):.1f}s of the budget left"
    has_val = len(run.val_ids) >= 2
    if skipped is None and (has_val or run.keep is not None):
        start = time.perf_counter()
        sums = []
        if has_val:
            sums.append(loss_total(run.model, run.val_ids, streams=cfg.eval_streams,
                                   part=world.rows))  # fmt: skip
        if run.keep is not None:
            sums.append(loss_total(run.model, run.keep.ids, streams=cfg.eval_streams,
                                   part=world.rows))  # fmt: skip
        seconds = time.perf_counter() - start if world.is_main else 0.0
        saving = timing.last_save if world.is_main else 0.0
        # Rank 0's durations ride along, so every rank schedules validations alike.
        *sums, seconds, timing.save_seconds = distributed.sum_across(world, [*sums, seconds,
                                                                             saving])  # fmt: skip
        record["eval_seconds"] = round(seconds, 3)
        tokens = 0
        if has_val:
            n = len(run.val_ids) - 1
            # Bits per character count the characters of the text, whatever the tokens are.
            chars = run.corpus.val_chars if run.corpus.val_chars is not None else n
            result = EvalResult(loss=sums[0] / n, tokens=n, chars=chars)
            record.update(val_loss=result.loss, val_bpc=result.bits_per_char)
            tokens += n
        if run.keep is not None:
            n = len(run.keep.ids) - 1
            keep = EvalResult(loss=sums[-1] / n, tokens=n, chars=run.keep.chars)
            record.update(keep_loss=keep.loss, keep_bpc=keep.bits_per_char)
            tokens += n
        timing.eval_seconds += seconds
        if seconds > 0:
            timing.eval_rate = tokens / seconds
    else:
        record["eval_seconds"] = 0.0
    if skipped is not None:
        record["skipped"] = skipped
        report("note", {"message": f"the final validation ({skipped}) is skipped: it would "
                                   "overrun the budget"})  # fmt: skip
    run.metrics.append(record)
    improved = record["val_loss"] is not None and record["val_loss"] < pos.best_val_loss
    if improved:
        pos.best_val_loss = record["val_loss"]
    elif skipped is not None:
        improved = not any(m.get("val_loss") is not None for m in run.metrics)  # a best.pt
    elif not has_val and not math.isnan(train_loss):
        # No validation split: "best" follows the training loss.
        improved = train_loss < pos.best_val_loss
        pos.best_val_loss = min(pos.best_val_loss, train_loss)
    # The budget's end holds back what the final validation is now expected to cost, and
    # last.pt records it: resuming a run that has reached its budget is refused.
    # After the final one, never less than the reserve that ended the loop (a validation
    # faster than predicted must not make a finished budget look unfinished).
    pos.reserve = max(pos.reserve, timing.reserve(run)) if final else timing.reserve(run)
    # A collective: every rank sends its streams' state, rank 0 saves all of them.
    full_state = [distributed.gather_rows(world, s, dim=1) for s in run.rnn_state or ()]
    saving = time.perf_counter()
    if world.is_main:
        if improved:
            best = run.checkpoint(with_resume=False)
            save_checkpoint(best, run.run_dir / "best.pt")
            if no_portable_form(run.model_cfg) is None:
                # After best.pt, so a crash between the two leaves a model file older than
                # best.pt, which is not used (portable.fresh_portable).
                write_model_file(run.run_dir / PORTABLE_NAME, run.model, run.tokenizer, best)
        save_checkpoint(
            run.checkpoint(with_resume=True, full_state=full_state), run.run_dir / "last.pt"
        )
        # Rewritten whole from the metrics that last.pt holds, so the two always agree.
        write_atomic(
            run.run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in run.metrics)
        )
        _write_run_json(run, finished=False)
    now = time.perf_counter()
    timing.last_save = now - saving
    if final:
        timing.final += saving - t0
        timing.saving += now - saving
    else:
        timing.validating += now - t0
    report("eval", {**record, "best": improved})
    return record["eval_seconds"]


def _write_run_json(run: Run, finished: bool) -> None:
    """run.json: what `charlstm runs` lists, readable without torch (the checkpoints need it)."""
    scored = [m for m in run.metrics if m.get("val_loss") is not None]
    best = min(scored, key=lambda m: m["val_loss"], default=None)
    cfg = run.train_cfg
    summary = {
        "model": asdict(run.model_cfg),
        "parameters": run.model.num_parameters(),
        "tokenizer": run.tokenizer.get("kind", "char"),
        "corpus": asdict(run.corpus),
        "step": run.pos.step,
        "tokens_seen": run.pos.tokens_seen,
        "elapsed": round(run.pos.elapsed, 3),
        "best_val_loss": best["val_loss"] if best else None,
        "best_val_bpc": best.get("val_bpc") if best else None,
        "limits": {"budget": cfg.budget, "steps": cfg.steps, "epochs": cfg.epochs},
        "finished": finished,
        "parent": run.parent,
    }
    write_atomic(run.run_dir / "run.json", json.dumps(summary, indent=1) + "\n")


def _reset_some(state: State, cfg: TrainConfig, step: int, streams: int, rows: slice) -> State:
    """Zero the state of a random few streams. The choice is a pure function of (seed, step)
    over all B streams, so resumed and multi-process runs reset the same ones."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    keep = (torch.rand(streams, generator=g) >= cfg.state_reset)[rows]  # (B / ranks,)
    if bool(keep.all()):
        return state
    keep = keep.to(state[0].device).view(1, -1, 1).float()  # (1, B, 1)
    return tuple(s * keep for s in state)
