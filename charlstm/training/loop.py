"""The training loop: AdamW, warm-up then cosine decay, gradient clipping, truncated BPTT over
B streams, validation on a schedule, checkpoints, resume, and stopping by budget/steps/epochs.

fit() reads as its parts: _begin (the layout, DDP, the optimizer, a resume's state, the
"start" event), _one_step (one window forward and backward, checked, applied), _after_step
(progress, the loss curve, a validation when due) and _summary. The step's schedule lives in
schedule.py, the Run and its clock in run.py, a validation in validate.py.

The loop returns values and reports events through a callback; it never prints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from charlstm.data.batches import StreamLayout, epoch_offset, window_batch
from charlstm.data.items import ItemLayout
from charlstm.device import grad_scaler
from charlstm.errors import CharlstmError
from charlstm.formats.checkpoint import save_checkpoint
from charlstm.formats.run_folder import RunFolder
from charlstm.training import distributed
from charlstm.training.held_out import training_layout
from charlstm.training.run import Report, Run, Timing
from charlstm.training.schedule import (
    RECORD_EVERY,
    Position,
    apply_step,
    learning_rate,
    make_optimizer,
    progress_of,
    reset_some,
    step_seed,
    train_step,
)
from charlstm.training.validate import stale_validations, validate, write_run_json


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
        save_checkpoint(run.checkpoint(with_resume=True), RunFolder(run.run_dir).last)
        return True
    except (CharlstmError, RuntimeError, MemoryError):
        return False


@dataclass
class _Loop:
    """What fit carries from one step to the next (its locals, named)."""

    layout: StreamLayout | ItemLayout
    rows: slice  # this rank's streams
    net: torch.nn.Module  # the model, wrapped for DDP when there are several processes
    scaler: torch.amp.GradScaler | None
    timing: Timing
    session_start: float  # this rank's clock when the run (all sessions) would have begun
    resumed_at: int | None
    explode_at: float  # a loss above this is an explosion
    first_step: int  # this session's
    last_eval_step: int
    last_eval_decile: int
    last_eval_at: float
    next_record: float  # the progress at which the next training-loss record is due
    last_eval_cost: float = 0.0
    offset: int | None = None  # the epoch's batch offset
    window_start: float = 0.0  # of the tokens/s shown in the progress event
    window_tokens: int = 0
    recorded_sum: float = 0.0
    recorded_n: int = 0
    stop_requested: bool = False
    stop_reason: str = "limit reached"
    loss_value: float = math.nan  # the last step's, the mean over all ranks


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
    loop = _begin(run, report, resume)
    # Stop requests travel in each step's all-reduce; this one covers a request made before
    # the first step.
    loop.stop_requested = distributed.sum_across(run.world, [float(should_stop())])[0] > 0
    run.pos.reserve = loop.timing.reserve(run)
    # A budget covers the last validation too: the loop ends when only its cost is left.
    while progress_of(run.train_cfg, run.pos, loop.layout, reserve=run.pos.reserve) < 1.0:
        # Stop between steps, before any of the next window's random numbers are drawn, so
        # last.pt holds exactly where an uninterrupted run stands; every rank stops alike.
        if loop.stop_requested:
            loop.stop_reason = "interrupted"
            break
        step_start = time.perf_counter()
        lr, grad_norm = _one_step(run, loop, should_stop)
        if _after_step(run, loop, report, step_start, lr, grad_norm):
            break
    loop.timing.loop_end = time.perf_counter()
    if run.pos.step > loop.last_eval_step or not run.metrics:
        validate(run, loop.loss_value, report, final=True)
    saving = time.perf_counter()
    if run.world.is_main:
        write_run_json(run, finished=loop.stop_reason != "interrupted")
    loop.timing.saving += time.perf_counter() - saving
    return _summary(run, loop)


def _begin(run: Run, report: Report, resume: dict[str, Any] | None) -> _Loop:
    """Lay the streams out, wrap the model for DDP, make the optimizer, restore a resume's
    position, optimizer and state, and report "start"."""
    cfg, model, world = run.train_cfg, run.model, run.world
    device = world.device
    began = time.perf_counter()
    layout, notes = training_layout(run.train_ids, cfg, run.tokenizer)
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
    _report_start(run, report, layout, resumed_at)
    model.train()
    # From fit's start: building the model for DDP and loading the state count too.
    session_start = began - pos.elapsed
    # Every decision that ends the loop or calls a collective is taken from figures all ranks
    # share: rank 0's clock, the summed loss, the stop requests of all ranks, rank 0's
    # validation and saving times (clock() and the all-reduce of each step).
    timing = Timing(world, session_start, pos, began)
    timing.tokens_per_step = layout.batch_size * layout.window
    run.timing = timing
    progress = progress_of(cfg, pos, layout)
    return _Loop(
        layout=layout, rows=rows, net=net, scaler=scaler, timing=timing,
        session_start=session_start, resumed_at=resumed_at,
        # An explosion is growth: past max(10, 3 ln V) and twice where this session started.
        # A fine-tune onto new characters starts far above the first (they start rare).
        explode_at=max(10.0, 3.0 * math.log(run.model_cfg.vocab_size)),
        first_step=pos.step, last_eval_step=pos.step, last_eval_decile=int(progress * 10),
        last_eval_at=pos.elapsed, window_start=time.perf_counter(),
        # The training loss is recorded at a steady cadence (every RECORD_EVERY of the run),
        # averaged since the last record, so that even a short run has a curve to plot.
        next_record=(int(progress / RECORD_EVERY) + 1) * RECORD_EVERY,
    )  # fmt: skip


def _report_start(run: Run, report: Report, layout: StreamLayout, resumed_at: int | None) -> None:
    cfg, world = run.train_cfg, run.world
    report(
        "start",
        {
            "parameters": run.model.num_parameters(),
            "vocab_size": run.model_cfg.vocab_size,
            "streams": layout.batch_size,
            "window": layout.window,
            "tokens_per_step": layout.batch_size * layout.window,
            "items": cfg.items is not None,  # then a window is an item's longest width
            "windows_per_epoch": layout.windows_per_epoch,
            "train_tokens": len(run.train_ids),
            "val_tokens": len(run.val_ids),
            "resumed_at": resumed_at,
            "limits": {"budget": cfg.budget, "steps": cfg.steps, "epochs": cfg.epochs},
            "where": f"{world.device}"
            + (f" × {world.size} processes" if world.active else "")
            + (f" · {run.precision}" if run.precision != "fp32" else ""),
        },
    )


def _one_step(
    run: Run, loop: _Loop, should_stop: Callable[[], bool]
) -> tuple[float, torch.Tensor]:
    """One window forward and backward, the loss shared and checked, the step applied and the
    position advanced; returns the learning rate and the gradient norm."""
    cfg, pos, world, layout = run.train_cfg, run.pos, run.world, loop.layout
    # Dropout and weight-drop masks are a pure function of (seed, step, rank): a resumed
    # run draws the masks the uninterrupted one drew, and each rank draws its own.
    torch.manual_seed(step_seed(cfg.seed, pos.step, world.rank))
    if isinstance(layout, ItemLayout):  # an item model: B items, each from a zero state
        x, y = layout.batch(run.train_ids, pos.epoch, pos.window, loop.rows)
        run.rnn_state = None
    else:
        if loop.offset is None or pos.window == 0:
            loop.offset = epoch_offset(cfg.seed, pos.epoch, layout, len(run.train_ids))
            if pos.window == 0:
                run.rnn_state = None  # streams jumped back to their starts: forget
        x, y = window_batch(run.train_ids, layout, loop.offset, pos.window, loop.rows)
    tokens = int((y != -100).sum()) if cfg.items else x.numel()  # padding is no token
    x, y = x.to(world.device, non_blocking=True), y.to(world.device, non_blocking=True)
    if run.rnn_state is not None and cfg.state_reset > 0:
        run.rnn_state = reset_some(run.rnn_state, cfg, pos.step, layout.batch_size, loop.rows)
    lr = learning_rate(cfg, pos.step, progress_of(cfg, pos, layout))
    assert run.optimizer is not None
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    try:
        loss, state, grad_norm = train_step(
            loop.net, run.optimizer, loop.scaler, x, y, run.rnn_state, cfg.clip, run.precision,
            masked=cfg.items is not None,
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
    elapsed = _share_step(run, loop, loss, should_stop)
    apply_step(run.optimizer, loop.scaler)
    run.rnn_state = None if cfg.items else state
    pos.step += 1
    pos.window += 1
    if pos.window >= layout.windows_per_epoch:
        pos.epoch, pos.window = pos.epoch + 1, 0
    pos.tokens_seen += tokens * world.size
    loop.window_tokens += tokens * world.size
    pos.elapsed = elapsed
    loop.timing.steps += 1
    pos.reserve = loop.timing.reserve(run)  # from shared figures: the same on every rank
    return lr, grad_norm


def _share_step(
    run: Run, loop: _Loop, loss: torch.Tensor, should_stop: Callable[[], bool]
) -> float:
    """One small all-reduce: the mean loss, rank 0's clock and any rank's stop request, so
    every rank takes the same decisions; a NaN or exploded loss raises TrainingDiverged.
    Returns rank 0's elapsed seconds."""
    world, timing, pos, cfg = run.world, loop.timing, run.pos, run.train_cfg
    loop.loss_value, elapsed, stops, timing.step_seconds = distributed.sum_across(
        world,
        [
            loss.item() / world.size,
            time.perf_counter() - loop.session_start if world.is_main else 0.0,
            float(should_stop()),
            timing.own_step_seconds if world.is_main else 0.0,  # up to the last step
        ],
    )
    loss_value = loop.loss_value
    if pos.step == loop.first_step and math.isfinite(loss_value):
        loop.explode_at = max(loop.explode_at, 2.0 * loss_value)
    loop.stop_requested = stops > 0
    timing.steps_timed = timing.steps
    if not math.isfinite(loss_value) or loss_value > loop.explode_at:
        what = "NaN" if math.isnan(loss_value) else f"{loss_value:.3g} (exploded)"
        kept = "the last good checkpoint is kept" if run.metrics else "no checkpoint was made"
        raise TrainingDiverged(
            f"the training loss became {what} at step {pos.step + 1}; {kept}. "
            f"Try a lower --lr (now {cfg.lr:g}) or --clip (now {cfg.clip:g})"
        )
    return elapsed


def _after_step(
    run: Run, loop: _Loop, report: Report, step_start: float, lr: float, grad_norm: torch.Tensor
) -> bool:
    """Report progress, record the loss curve, and validate when one is due; True when the
    run should stop (no better validation in --patience)."""
    cfg, pos, layout, timing = run.train_cfg, run.pos, loop.layout, loop.timing
    progress = progress_of(cfg, pos, layout)
    now = time.perf_counter()
    if now - loop.window_start >= 0.5:
        report(
            "progress",
            {
                "step": pos.step,
                "loss": loop.loss_value,
                "lr": lr,
                "grad_norm": float(grad_norm),
                "tokens_per_s": loop.window_tokens / (now - loop.window_start),
                "progress": min(progress, 1.0),
                "elapsed": pos.elapsed,
                "epoch": pos.epoch + pos.window / layout.windows_per_epoch,
            },
        )
        loop.window_start, loop.window_tokens = now, 0
    pos.train_seconds += time.perf_counter() - step_start
    timing.own_step_seconds += time.perf_counter() - step_start
    loop.recorded_sum, loop.recorded_n = loop.recorded_sum + loop.loss_value, loop.recorded_n + 1
    if progress >= loop.next_record:
        run.curve.append({"step": pos.step, "elapsed": round(pos.elapsed, 3),
                          "train_loss": loop.recorded_sum / loop.recorded_n})  # fmt: skip
        loop.recorded_sum, loop.recorded_n = 0.0, 0
        loop.next_record = (int(progress / RECORD_EVERY) + 1) * RECORD_EVERY
    decile = int(progress * 10)
    if not (_validation_due(run, loop, decile) and progress < 1.0) or loop.stop_requested:
        return False
    loop.last_eval_cost = validate(run, loop.loss_value, report)
    loop.last_eval_step, loop.last_eval_decile, loop.last_eval_at = pos.step, decile, pos.elapsed
    # Validation time counts against the budget but not against tokens/s.
    loop.window_start, loop.window_tokens = time.perf_counter(), 0
    # Every rank holds the same summed figures, so all stop together.
    if cfg.patience and stale_validations(run.metrics) >= cfg.patience:
        loop.stop_reason = f"no better validation in the last {cfg.patience} (--patience)"
        return True
    return False


def _validation_due(run: Run, loop: _Loop, decile: int) -> bool:
    """Whether a validation is due after this step (and, under a budget, fits in it)."""
    cfg, pos, timing = run.train_cfg, run.pos, loop.timing
    # On multiples of eval_every (not "since the last"), so a resumed run validates at the
    # same steps as an uninterrupted one.
    # Up to ten validations a run by default, but never more than ~2% of the time in them:
    # each costs training time the budget could have spent (the best model is almost always
    # the last, as the learning rate reaches its floor), and a big validation split or a
    # word vocabulary makes each one costly.
    due = (
        pos.step % cfg.eval_every == 0
        if cfg.eval_every
        else decile > loop.last_eval_decile
        and pos.elapsed - loop.last_eval_at >= 49 * loop.last_eval_cost
    )
    # Under a budget, only where it and the final one still fit.
    fits = progress_of(cfg, pos, loop.layout, reserve=pos.reserve + timing.eval_cost(run)) < 1.0
    # Under a budget, the first after a few steps: their speed sizes the validation.
    fits = fits and (timing.steps >= 8 or bool(run.metrics))
    return due and (fits or not cfg.budget)


def _summary(run: Run, loop: _Loop) -> dict[str, Any]:
    """What fit returns: how the run ended, how far it got, its best validation, its seconds."""
    pos, device = run.pos, run.world.device
    scored = [m for m in run.metrics if m.get("val_loss") is not None]
    best_record = min(scored, key=lambda m: m["val_loss"], default=None)
    best = best_record["val_loss"] if best_record else None
    return {
        "stop_reason": loop.stop_reason,
        "steps": pos.step,
        "epochs": pos.epoch + pos.window / loop.layout.windows_per_epoch,
        "tokens_seen": pos.tokens_seen,
        "elapsed": pos.elapsed,
        # Over training steps alone: validations count against the budget, not here.
        "tokens_per_s": pos.tokens_seen / pos.train_seconds if pos.train_seconds > 0 else None,
        "parameters": run.model.num_parameters(),
        "best_val_loss": best,
        "best_val_bpc": best_record["val_bpc"] if best_record else None,
        "val_losses": [m["val_loss"] for m in scored],
        "keep_losses": [m["keep_loss"] for m in run.metrics if m.get("keep_loss") is not None],
        "tokenizer": run.tokenizer.get("kind", "char"),
        "last_train_loss": loop.loss_value,
        "run_dir": str(run.run_dir),
        "device": str(device),
        "processes": run.world.size,
        "precision": run.precision,
        "peak_gpu_memory_mb": (
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        ),
        # This session's seconds, part by part (rank 0's clock): the summary adds them up.
        "session_seconds": loop.timing.parts(),
        "resumed_at_step": loop.resumed_at,
        "val_tokens_scored": len(run.val_ids) - 1 if len(run.val_ids) >= 2 else 0,
    }
