"""Dynamic evaluation (Krause et al., 2018): the model keeps learning from a text as it reads it.

    scale = gradient_scale(model, train_ids, cfg)      # √MS per weight, for the rms rule
    losses = dynamic_losses(model, ids, cfg, scale)    # nats of every prediction of ids
    net = adapted(model, prime_ids, cfg, scale, passes=2)   # a copy that has learnt the prime

The text is one stream, cut into segments of cfg.segment tokens, the recurrent state carried
from each to the next:

    ids:  | segment 0 | segment 1 | segment 2 | ...
            score ──▶ step ──▶ score ──▶ step ──▶ ...     (θ_0 = trained, θ_i after segment i−1)

Each segment is scored with the weights as they stand, then one gradient step on its mean loss
(config.DynamicConfig has the update rules) moves them before the next segment is read: every
token is predicted before anything is learnt from it, so the total is an honest code length of
the text. The model is in eval mode (no dropout), as in the paper. The caller's model is never
changed: `dynamic_losses` puts its weights back afterwards and `adapted` works on a copy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from charlstm.config import DynamicConfig
from charlstm.data.batches import eval_layout, eval_window
from charlstm.model.language_model import LanguageModel
from charlstm.model.layers import detach_state

# Streams that read the training split for the gradient statistics (Krause et al. used 100).
STAT_STREAMS = 32


def _segments(ids: np.ndarray, segment: int, streams: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Inputs and targets (S, n) of consecutive segments of S streams over ids, the last ones
    padded with target -100."""
    layout = eval_layout(len(ids), streams)
    for start in range(0, layout[1], segment):
        yield eval_window(ids, layout, start, segment)


def _segment_loss(
    model: LanguageModel, x: Tensor, y: Tensor, state: tuple | None
) -> tuple[Tensor, Tensor, tuple]:
    """Per-target losses (S, n), their mean over the real targets, and the new state."""
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    losses, state = model(x, state, y)  # (S, n), 0 where y = -100
    return losses, losses.float().sum() / (y != -100).sum().clamp(min=1), state


def gradient_scale(
    model: LanguageModel, ids: np.ndarray, cfg: DynamicConfig, streams: int = STAT_STREAMS
) -> list[Tensor]:
    """√MS for each parameter (in model.parameters() order): the root mean square of its
    gradient over the segments of the first cfg.stat_tokens of `ids` (the training split), read
    as `streams` streams carrying state, in eval mode: Krause et al.'s gradient statistics."""
    params = list(model.parameters())
    squares = [torch.zeros_like(p) for p in params]
    part = np.asarray(ids[: cfg.stat_tokens + 1])
    was_training = model.training
    model.eval()
    state, count = None, 0
    try:
        for x, y in _segments(part, cfg.segment, min(streams, max(1, (len(part) - 1) // 2))):
            model.zero_grad(set_to_none=True)
            _, loss, state = _segment_loss(model, x, y, state)
            loss.backward()
            state = detach_state(state)
            for sq, p in zip(squares, params, strict=True):
                if p.grad is not None:
                    sq.add_(p.grad.square())
            count += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return [(sq / max(count, 1)).sqrt_() for sq in squares]


class _Rule:
    """One update rule over a model's parameters, remembering the trained values."""

    def __init__(self, params: list[Tensor], cfg: DynamicConfig, scale: list[Tensor] | None):
        self.params, self.cfg = params, cfg
        self.trained = [p.detach().clone() for p in params]
        # rms without training statistics: the mean squared gradient of the segments read so far.
        self.online = cfg.rule == "rms" and scale is None
        self.squares = [torch.zeros_like(p) for p in params] if self.online else None
        self.count = 0
        self.scale: list[Tensor] = []
        self.rates: list[Tensor] = []
        if cfg.rule == "rms" and scale is not None:
            self._set_scale(scale)

    def _set_scale(self, scale: list[Tensor]) -> None:
        # The decay of each weight follows its gradient scale, normalised to a mean of 1 over
        # the parameter tensors, and capped at 1/decay so that it never overshoots the prior.
        mean = torch.stack([s.mean() for s in scale]).mean().clamp(min=1e-30)
        cap = 1.0 / self.cfg.decay if self.cfg.decay > 0 else float("inf")
        self.scale = scale
        self.rates = [(s / mean).clamp(max=cap) for s in scale]

    @torch.no_grad()
    def step(self) -> None:
        cfg = self.cfg
        if self.online:
            assert self.squares is not None
            self.count += 1
            for sq, p in zip(self.squares, self.params, strict=True):
                if p.grad is not None:
                    sq.add_(p.grad.square())
            self._set_scale([(sq / self.count).sqrt() for sq in self.squares])
        for j, (p, p0) in enumerate(zip(self.params, self.trained, strict=True)):
            if p.grad is None:
                continue
            if cfg.rule == "rms":
                if cfg.decay:
                    p.add_(self.rates[j] * (p0 - p), alpha=cfg.decay)
                p.addcdiv_(p.grad, self.scale[j] + cfg.epsilon, value=-cfg.lr)
            else:
                if cfg.decay:
                    p.add_(p0 - p, alpha=cfg.decay)
                p.add_(p.grad, alpha=-cfg.lr)

    @torch.no_grad()
    def restore(self) -> None:
        for p, p0 in zip(self.params, self.trained, strict=True):
            p.copy_(p0)


def _read(model: LanguageModel, ids: np.ndarray, rule: _Rule, segment: int) -> Iterator[Tensor]:
    """One pass over ids as one stream, segment by segment: yield each segment's losses (n,),
    then take the gradient step on it."""
    state = None
    for x, y in _segments(ids, segment, 1):
        model.zero_grad(set_to_none=True)
        losses, loss, state = _segment_loss(model, x, y, state)
        yield losses.detach()[0][(y[0] != -100).to(losses.device)]
        loss.backward()
        rule.step()
        state = detach_state(state)
    model.zero_grad(set_to_none=True)


def dynamic_losses(
    model: LanguageModel, ids: np.ndarray, cfg: DynamicConfig, scale: list[Tensor] | None
) -> np.ndarray:
    """The loss (nats) of every next-token prediction of ids (len(ids) − 1 values), learning
    from each segment after scoring it; the model's weights are put back afterwards. `scale`:
    `gradient_scale` on the training split, or None (sgd, or rms from the text's own past)."""
    params = list(model.parameters())
    rule = _Rule(params, cfg, scale)
    was_training = model.training
    model.eval()
    try:
        losses = [seg.double().cpu() for seg in _read(model, ids, rule, cfg.segment)]
    finally:
        rule.restore()
        model.train(was_training)
    return torch.cat(losses).numpy()[: len(ids) - 1]


def adapted(
    model: LanguageModel,
    ids: np.ndarray,
    cfg: DynamicConfig,
    scale: list[Tensor] | None,
    passes: int = 1,
) -> LanguageModel:
    """A copy of the model that has read ids `passes` times with dynamic evaluation's updates
    (each pass from a zero state), in eval mode; the model itself is not changed."""
    net = copy.deepcopy(model).eval()
    rule = _Rule(list(net.parameters()), cfg, scale)
    for _ in range(passes):
        for _ in _read(net, ids, rule, cfg.segment):
            pass
    return net
