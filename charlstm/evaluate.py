"""Loss, perplexity and bits per character of a text, computed exactly: every token predicted
once, with the recurrent state carried through the text.

The text is cut into S contiguous streams run side by side (S = 1 is one sequential pass); each
stream starts from a zero state, so S only changes the first few predictions of each stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from charlstm.data import eval_streams
from charlstm.model import LanguageModel


@dataclass(frozen=True)
class EvalResult:
    loss: float  # nats per token
    tokens: int  # tokens predicted
    chars: int  # characters of text those tokens spell (bits per character divide by this)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    @property
    def bits_per_char(self) -> float:
        return self.loss * self.tokens / self.chars / math.log(2) if self.chars else float("nan")

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "perplexity": self.perplexity, "bits_per_char": self.bits_per_char}


_LOGITS_PER_WINDOW = 1 << 22

Rows = Callable[[int], slice]  # which of the S streams to run (a rank's share), given S


def _window_losses(
    model: LanguageModel, ids: np.ndarray, streams: int, window: int, part: Rows | None = None
) -> Iterator[torch.Tensor]:
    """The loss (nats) of every prediction, window by window over S streams carrying state:
    yields (S, T) float64 tensors, 0 at padded positions. The model is in eval mode meanwhile."""
    x, y = eval_streams(ids, streams)  # each (S, L)
    if part is not None:
        rows = part(x.shape[0])
        x, y = x[rows], y[rows]
        if x.shape[0] == 0:  # fewer streams than ranks: nothing for this one
            return
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    # Keep each window's logits (S, T, V) near 4M numbers: a word vocabulary is 10^4–10^5 wide.
    window = max(1, min(window, _LOGITS_PER_WINDOW // (x.shape[0] * model.cfg.vocab_size)))
    state = None
    try:
        with torch.no_grad():
            for start in range(0, x.shape[1], window):
                target = y[:, start : start + window]  # (S, T)
                loss, state = model(x[:, start : start + window], state, target)  # (S, T)
                yield loss.double()
    finally:
        model.train(was_training)


def evaluate_ids(
    model: LanguageModel,
    ids: np.ndarray,
    *,
    streams: int = 32,
    window: int = 256,
    chars: int | None = None,
) -> EvalResult:
    """Exact mean cross-entropy over all next-token predictions of `ids`."""
    total = loss_total(model, ids, streams=streams, window=window)
    n = len(ids) - 1
    return EvalResult(loss=total / n, tokens=n, chars=n if chars is None else chars)


def loss_total(
    model: LanguageModel,
    ids: np.ndarray,
    *,
    streams: int = 32,
    window: int = 256,
    part: Rows | None = None,
) -> float:
    """The summed loss (nats) of the predictions in the streams `part` selects (all: None)."""
    return sum(float(loss.sum()) for loss in _window_losses(model, ids, streams, window, part))


def token_losses(model: LanguageModel, ids: np.ndarray, *, window: int = 256) -> np.ndarray:
    """The loss (nats) of every next-token prediction of `ids` (len(ids) - 1 values), in one
    sequential pass (one stream) that carries the state through the whole text."""
    losses = torch.cat([loss[0] for loss in _window_losses(model, ids, 1, window)])
    return losses.cpu().numpy()[: len(ids) - 1]


@dataclass(frozen=True)
class LineScore:
    line: str  # the line's text, without its newline
    tokens: int  # predictions that fell in this line (its newline included)
    chars: int  # characters those tokens spell
    nats: float  # their total loss

    @property
    def bits_per_char(self) -> float | None:
        return self.nats / self.chars / math.log(2) if self.chars else None

    def to_dict(self) -> dict[str, object]:
        return {
            "line": self.line,
            "tokens": self.tokens,
            "nats": self.nats,
            "bits_per_char": self.bits_per_char,
        }


def score_lines(pieces: list[str], losses: np.ndarray) -> list[LineScore]:
    """Sum per-token losses per line. pieces[i] is the text of token i; losses[i] is the loss of
    predicting token i + 1. A token belongs to the line it starts in, so the newline belongs to
    the line it ends; the first token is never predicted and counts for nothing."""
    lines: list[LineScore] = []
    text, tokens, chars, nats = [], 0, 0, 0.0
    for i, piece in enumerate(pieces):
        text.append(piece)
        if i > 0:
            tokens, chars, nats = tokens + 1, chars + len(piece), nats + float(losses[i - 1])
        if "\n" in piece:
            lines.append(LineScore("".join(text).rstrip("\n"), tokens, chars, nats))
            text, tokens, chars, nats = [], 0, 0, 0.0
    if text:
        lines.append(LineScore("".join(text), tokens, chars, nats))
    return lines
