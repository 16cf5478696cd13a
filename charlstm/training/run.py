"""What a training session works on (Run: the model, its configs, the data, where it stands)
and its clock (Timing: the seconds every rank agrees on, the speeds that predict what a
validation costs, and where the seconds went)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlstm.config import TrainConfig
from charlstm.data.tokens import CorpusInfo
from charlstm.model.language_model import LanguageModel, ModelConfig
from charlstm.model.layers import State
from charlstm.training import distributed
from charlstm.training.distributed import World
from charlstm.training.schedule import Position

Report = Callable[[str, dict[str, Any]], None]  # (event, data): "note", "start", "progress", "eval"

# The most of a budget one validation may take: a validation split that would take longer (at
# the speed measured) is cut to the tokens that fit, once, at the run's first validation, and
# every later validation (a resumed one too: it is saved as --val-tokens) scores the same part.
VALIDATION_SHARE = 0.05
# The budget's end is held back by the final validation's predicted time and its saving, times
# this (a busy machine's speed varies from one second to the next).
RESERVE_MARGIN = 1.25
MIN_VAL_TOKENS = 1000


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
    timing: Timing | None = None  # the session's clock and speeds (set by fit)

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


@dataclass
class Prepared:
    """A run ready to train, the training state to resume from, and how it was made."""

    run: Run
    resume_state: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # goes into the summary


class Timing:
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
        first one, of the part fit_validation will keep."""
        rate = self.eval_rate or self.train_rate()
        if rate <= 0:
            return 0.0
        val = max(len(run.val_ids) - 1, 0)
        if not run.metrics:
            val = min(val, val_cap(run, rate))
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


def val_cap(run: Run, rate: float) -> int | float:
    """The validation tokens one validation can score in VALIDATION_SHARE of the budget at
    `rate` tokens/s (no cap without a budget)."""
    if not run.train_cfg.budget:
        return math.inf
    return max(MIN_VAL_TOKENS, int(rate * VALIDATION_SHARE * run.train_cfg.budget))


def fit_validation(run: Run, timing: Timing, report: Report) -> None:
    """At a budget run's first validation: cut the validation split to what one validation can
    score in VALIDATION_SHARE of the budget, and keep that cut for the run (as --val-tokens)."""
    n = len(run.val_ids)
    rate = timing.eval_rate or timing.train_rate()
    if rate <= 0 or n < 2:
        return
    cap = val_cap(run, rate)
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
