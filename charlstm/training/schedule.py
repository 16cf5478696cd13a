"""The schedule of one training step, as pure functions of the run's seed and step: where
training stands (Position), the step's seed, its learning rate, how far the run has got, which
streams forget their state, and the step itself (forward, backward, clip; then apply)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from charlstm.config import TrainConfig
from charlstm.data.batches import StreamLayout
from charlstm.device import autocast
from charlstm.model.language_model import LanguageModel
from charlstm.model.layers import State, detach_state

RECORD_EVERY = 0.02  # of a run, between training-loss records in the metrics


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
    masked: bool = False,
) -> tuple[torch.Tensor, State, torch.Tensor]:
    """Forward and backward over one window (B, T), the gradients clipped to `clip`: returns
    the mean loss, the new state (detached: truncated BPTT) and the gradient norm. The caller
    checks the loss, then applies the step with `apply_step`. `masked`: the mean is over the
    targets that are not padding (-100: an item model's rows)."""
    with autocast(x.device, precision):
        losses, new_state = net(x, state, y)  # (B, T) nats
    loss = losses.float().mean() if not masked else losses.float().sum() / (y != -100).sum()
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


def reset_some(state: State, cfg: TrainConfig, step: int, streams: int, rows: slice) -> State:
    """Zero the state of a random few streams. The choice is a pure function of (seed, step)
    over all B streams, so resumed and multi-process runs reset the same ones."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    keep = (torch.rand(streams, generator=g) >= cfg.state_reset)[rows]  # (B / ranks,)
    if bool(keep.all()):
        return state
    keep = keep.to(state[0].device).view(1, -1, 1).float()  # (1, B, 1)
    return tuple(s * keep for s in state)
