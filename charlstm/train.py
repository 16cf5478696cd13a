"""The training loop: AdamW, warm-up then cosine decay, gradient clipping, truncated BPTT over
B streams, validation on a schedule, checkpoints, resume, and stopping by budget/steps/epochs.

The loop returns values and reports events through a callback; it never prints.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from charlstm.checkpoint import save_checkpoint, write_atomic
from charlstm.config import TrainConfig
from charlstm.data import (
    StreamLayout,
    epoch_offset,
    fit_layout,
    stream_matrix,
    window_batch,
)
from charlstm.errors import CharlstmError
from charlstm.evaluate import evaluate_ids
from charlstm.model import LanguageModel, ModelConfig, State, detach_state

Report = Callable[[str, dict[str, Any]], None]  # (event, data): "note", "start", "progress", "eval"


class TrainingDiverged(CharlstmError):
    """The loss became NaN or exploded; the message says what to try."""


@dataclass
class Position:
    """Where training stands; saved in last.pt so a resumed run replays the same batches."""

    step: int = 0
    epoch: int = 0
    window: int = 0  # next window of the current epoch
    tokens_seen: int = 0
    elapsed: float = 0.0  # seconds of training so far, over all sessions
    best_val_loss: float = math.inf


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over `warmup_steps`, then cosine from lr to lr * min_lr_ratio as progress
    (fraction of the run done, by steps, epochs or wall clock) goes from 0 to 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def progress_of(cfg: TrainConfig, pos: Position, layout: StreamLayout) -> float:
    """Fraction of the run done: the largest of the limits' fractions (whichever ends first)."""
    parts = [0.0]
    if cfg.steps:
        parts.append(pos.step / cfg.steps)
    if cfg.epochs:
        parts.append(pos.step / (cfg.epochs * layout.windows_per_epoch))
    if cfg.budget:
        parts.append(pos.elapsed / cfg.budget)
    return max(parts)


def make_optimizer(model: LanguageModel, cfg: TrainConfig) -> torch.optim.AdamW:
    # Decay weight matrices only; biases and gains keep their scale.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))


@dataclass
class Run:
    """Everything a training session works on; checkpoint() turns it into a file's dict."""

    model: LanguageModel
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    tokenizer: dict[str, Any]
    train_ids: np.ndarray
    val_ids: np.ndarray
    corpus: dict[str, Any]  # fingerprint, sources, sizes
    run_dir: Path
    pos: Position = field(default_factory=Position)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None
    rnn_state: State | None = None

    def checkpoint(self, *, with_resume: bool) -> dict[str, Any]:
        ckpt: dict[str, Any] = {
            "model_config": asdict(self.model_cfg),
            "train_config": asdict(self.train_cfg),
            "tokenizer": self.tokenizer,
            "model": self.model.state_dict(),
            "metrics": list(self.metrics),
            "corpus": self.corpus,
            "step": self.pos.step,
            "tokens_seen": self.pos.tokens_seen,
            "best_val_loss": self.pos.best_val_loss,
        }
        if with_resume:
            assert self.optimizer is not None
            ckpt["resume"] = {
                "position": asdict(self.pos),
                "optimizer": self.optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "rnn_state": _state_list(self.rnn_state),
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
    """
    cfg, model = run.train_cfg, run.model
    layout, notes = fit_layout(len(run.train_ids), cfg.batch_size, cfg.window)
    for note in notes:
        report("note", {"message": note})
    run.optimizer = make_optimizer(model, cfg)
    if resume is not None:
        run.pos = Position(**resume["position"])
        run.optimizer.load_state_dict(resume["optimizer"])
        torch.set_rng_state(resume["torch_rng"])
        run.rnn_state = _state_from_list(resume["rnn_state"])
    pos = run.pos
    eval_every = cfg.eval_every
    explode_at = max(10.0, 3.0 * math.log(run.model_cfg.vocab_size))
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
            "resumed_at": pos.step if resume is not None else None,
        },
    )

    model.train()
    streams = None
    last_eval_step = pos.step
    last_eval_decile = int(progress_of(cfg, pos, layout) * 10)
    session_start = time.perf_counter() - pos.elapsed
    window_start, window_tokens = time.perf_counter(), 0
    stop_reason = "limit reached"
    loss_value = math.nan

    while progress_of(cfg, pos, layout) < 1.0:
        if should_stop():
            stop_reason = "interrupted"
            break
        if streams is None or pos.window == 0:
            offset = epoch_offset(cfg.seed, pos.epoch, layout, len(run.train_ids))
            streams = stream_matrix(run.train_ids, layout, offset)
            if pos.window == 0:
                run.rnn_state = None  # streams jumped back to their starts: forget
        x, y = window_batch(streams, layout, pos.window)
        lr = learning_rate(cfg, pos.step, progress_of(cfg, pos, layout))
        for group in run.optimizer.param_groups:
            group["lr"] = lr

        logits, state = model(x, run.rnn_state)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        loss_value = loss.item()
        if not math.isfinite(loss_value) or loss_value > explode_at:
            what = "NaN" if math.isnan(loss_value) else f"{loss_value:.3g} (exploded)"
            raise TrainingDiverged(
                f"the training loss became {what} at step {pos.step + 1}; the last good "
                f"checkpoint is kept. Try a lower --lr (now {cfg.lr:g}) "
                f"or --clip (now {cfg.clip:g})"
            )
        run.optimizer.step()
        run.rnn_state = detach_state(state)

        pos.step += 1
        pos.window += 1
        if pos.window >= layout.windows_per_epoch:
            pos.epoch, pos.window = pos.epoch + 1, 0
        pos.tokens_seen += x.numel()
        window_tokens += x.numel()
        pos.elapsed = time.perf_counter() - session_start
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

        decile = int(progress * 10)
        # On multiples of eval_every (not "since the last"), so a resumed run validates at the
        # same steps as an uninterrupted one.
        due = pos.step % eval_every == 0 if eval_every else decile > last_eval_decile
        if due and progress < 1.0:
            _validate(run, loss_value, report)
            last_eval_step, last_eval_decile = pos.step, decile
            # Validation time counts against the budget but not against tokens/s.
            window_start, window_tokens = time.perf_counter(), 0

    if pos.step > last_eval_step or not run.metrics:
        _validate(run, loss_value, report)
    best = min((m["val_loss"] for m in run.metrics if m.get("val_loss") is not None), default=None)
    return {
        "stop_reason": stop_reason,
        "steps": pos.step,
        "epochs": pos.epoch + pos.window / layout.windows_per_epoch,
        "tokens_seen": pos.tokens_seen,
        "elapsed": pos.elapsed,
        "parameters": model.num_parameters(),
        "best_val_loss": best,
        "best_val_bpc": best / math.log(2) if best is not None else None,
        "last_train_loss": loss_value,
        "run_dir": str(run.run_dir),
    }


def _validate(run: Run, train_loss: float, report: Report) -> None:
    """Evaluate the whole validation split, log a metrics line, write last.pt and maybe best.pt."""
    pos, cfg = run.pos, run.train_cfg
    t0 = time.perf_counter()
    record: dict[str, Any] = {
        "step": pos.step,
        "tokens_seen": pos.tokens_seen,
        "elapsed": round(pos.elapsed, 3),
        "train_loss": train_loss,
        "val_loss": None,
    }
    if len(run.val_ids) >= 2:
        result = evaluate_ids(run.model, run.val_ids, streams=cfg.eval_streams)
        record.update(val_loss=result.loss, val_bpc=result.bits_per_char)
    record["eval_seconds"] = round(time.perf_counter() - t0, 3)
    run.metrics.append(record)
    improved = record["val_loss"] is not None and record["val_loss"] < pos.best_val_loss
    if improved:
        pos.best_val_loss = record["val_loss"]
    elif record["val_loss"] is None and not math.isnan(train_loss):
        # No validation split: "best" follows the training loss.
        improved = train_loss < pos.best_val_loss
        pos.best_val_loss = min(pos.best_val_loss, train_loss)
    if improved:
        save_checkpoint(run.checkpoint(with_resume=False), run.run_dir / "best.pt")
    save_checkpoint(run.checkpoint(with_resume=True), run.run_dir / "last.pt")
    # Rewritten whole from the metrics that last.pt holds, so the two always agree.
    write_atomic(run.run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in run.metrics))
    report("eval", {**record, "best": improved})


def _state_list(state: State | None) -> list[torch.Tensor]:
    if state is None:
        return []
    return list(state) if isinstance(state, tuple) else [state]


def _state_from_list(tensors: list[torch.Tensor]) -> State | None:
    if not tensors:
        return None
    return tensors[0] if len(tensors) == 1 else (tensors[0], tensors[1])
