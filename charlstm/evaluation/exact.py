"""Loss, perplexity and bits per character of a text, computed exactly: every token predicted
once, with the recurrent state carried through the text.

The text is cut into S contiguous streams run side by side (S = 1 is one sequential pass). The
first starts from a zero state, as a single pass does; each other one first reads, unscored, the
text just before its start (and, with an attention head, M tokens more, so that its memory holds
warmed-up states), so S changes the result only by what the state remembers from further back
than that (BENCHMARKS.md: under 1e-4 nats for a character model). A text too short for S
streams of that length is read in fewer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from charlstm.data.batches import eval_layout, eval_window
from charlstm.model.language_model import LanguageModel


@dataclass(frozen=True)
class EvalResult:
    loss: float  # nats per token
    tokens: int  # tokens predicted
    chars: int  # characters of text those tokens spell (bits per character divide by this)
    skipped_chars: int = 0  # characters of the text a char model never saw, left out
    unknown_words: int = 0  # words outside a word model's vocabulary, scored as unknown
    # How the text was scored dynamically (the model learning as it read), None: statically.
    dynamic: dict[str, Any] | None = None
    streams: int = 1  # the streams (or --reset-every blocks) run side by side

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    @property
    def bits_per_char(self) -> float:
        return self.loss * self.tokens / self.chars / math.log(2) if self.chars else float("nan")

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "perplexity": self.perplexity, "bits_per_char": self.bits_per_char}


_LOGITS_PER_WINDOW = 1 << 22
# Unscored tokens each parallel stream reads before its own start; a trained character LSTM's
# state forgets its start within a few hundred characters (see test_evaluate).
WARMUP = 256


def warm_up(model: LanguageModel) -> int:
    """The unscored tokens a parallel stream reads before its start: WARMUP for the state, and
    M more with an attention head, whose M memory slots must hold warmed-up states too."""
    return WARMUP + model.cfg.attention


def _layout(n_ids: int, streams: int, warmup: int, block: int) -> tuple[int, int]:
    """eval_layout's (S, L), where each stream must be long enough for the one after it to warm
    up on: a short text is read in fewer streams rather than with a warm-up cut short."""
    if warmup and not block:
        streams = min(streams, max(1, predictions(n_ids) // warmup))
    return eval_layout(n_ids, streams, block)


Rows = Callable[[int], slice]  # which of the S streams to run (a rank's share), given S


def predictions(n_ids: int) -> int:
    """The tokens a pass over `n_ids` ids scores: every one but the first, which nothing
    before it predicts. `evaluate`'s and `/score`'s "tokens" are this count."""
    return max(0, n_ids - 1)


def _window_losses(
    model: LanguageModel,
    ids: np.ndarray,
    streams: int,
    window: int,
    part: Rows | None = None,
    warmup: int | None = None,
    block: int = 0,
) -> Iterator[torch.Tensor]:
    """The loss (nats) of every prediction, window by window over S streams carrying state:
    yields (S, T) float64 tensors, 0 at padded positions. The model is in eval mode meanwhile.

    Streams after the first read the `warmup` tokens before their start unscored (None:
    `warm_up(model)`), so that their state, like a single pass's, already holds context when
    scoring begins. With `block`, the streams are blocks of that many predictions, each from a
    zero state (no warm-up)."""
    warmup = warm_up(model) if warmup is None else warmup
    layout = _layout(len(ids), streams, warmup, block)  # (S, L)
    rows = part(layout[0]) if part is not None else slice(None)
    mine = range(layout[0])[rows]
    if len(mine) == 0:  # fewer streams than ranks: nothing for this one
        return
    n_rows = len(mine)
    warm = min(warmup, layout[1]) if layout[0] > 1 and not block else 0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # Keep each window's logits (S, T, V) near 4M numbers: a word vocabulary is 10^4–10^5 wide.
    window = max(1, min(window, _LOGITS_PER_WINDOW // (n_rows * model.cfg.vocab_size)))
    state = None
    try:
        with torch.no_grad():
            for start in range(-warm, 0, window):
                x, y = eval_window(ids, layout, start, min(window, -start), rows)
                _, state = model(x.to(device), state, y.to(device))
            if warm and mine[0] == 0:  # stream 0 begins the text: from a zero state, exactly
                for s in state:
                    s[:, 0].zero_()
            for start in range(0, layout[1], window):
                # Windows are read from ids as they are needed: a big split never sits in memory.
                x, y = eval_window(ids, layout, start, window, rows)  # (S, T) each
                loss, state = model(x.to(device), state, y.to(device))  # (S, T)
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
    block: int = 0,
) -> EvalResult:
    """Exact mean cross-entropy over all next-token predictions of `ids`; with `block`, each
    block of that many predictions starts from a zero state (a context of at most `block`)."""
    total = loss_total(model, ids, streams=streams, window=window, block=block)
    n = predictions(len(ids))
    used = _layout(len(ids), streams, warm_up(model), block)[0]
    return EvalResult(loss=total / n, tokens=n, chars=n if chars is None else chars, streams=used)


def loss_total(
    model: LanguageModel,
    ids: np.ndarray,
    *,
    streams: int = 32,
    window: int = 256,
    part: Rows | None = None,
    warmup: int | None = None,
    block: int = 0,
) -> float:
    """The summed loss (nats) of the predictions in the streams `part` selects (all: None)."""
    losses = _window_losses(model, ids, streams, window, part, warmup, block)
    return sum(float(loss.sum()) for loss in losses)


def token_losses(model: LanguageModel, ids: np.ndarray, *, window: int = 256) -> np.ndarray:
    """The loss (nats) of every next-token prediction of `ids` (len(ids) - 1 values), in one
    sequential pass (one stream) that carries the state through the whole text."""
    losses = torch.cat([loss[0] for loss in _window_losses(model, ids, 1, window)])
    return losses.cpu().numpy()[: predictions(len(ids))]


def token_logprobs(
    model: LanguageModel, ids: np.ndarray, top: int = 0, *, window: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sequential pass over `ids` from a zero state: the log-probability of every token
    after the first (len(ids) - 1,) float64, and the `top` most likely tokens at each of those
    predictions, ids and log-probabilities (len(ids) - 1, top), most likely first."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    window = max(1, min(window, _LOGITS_PER_WINDOW // model.cfg.vocab_size))
    chosen, top_ids, top_lps, state = [], [], [], None
    try:
        with torch.no_grad():
            for start in range(0, max(0, len(ids) - 1), window):
                x = torch.from_numpy(np.asarray(ids[start : start + window], np.int64))
                y = torch.from_numpy(np.asarray(ids[start + 1 : start + window + 1], np.int64))
                logits, state = model(x[: len(y)].view(1, -1).to(device), state)  # (1, T, V)
                logp = torch.log_softmax(logits[0].double(), dim=-1)  # (T, V)
                chosen.append(logp.gather(1, y.view(-1, 1).to(device))[:, 0].cpu())
                found = logp.topk(min(top, logp.shape[-1]), dim=-1)
                top_ids.append(found.indices.cpu())
                top_lps.append(found.values.cpu())
                if len(y) < len(x):
                    break
    finally:
        model.train(was_training)
    if not chosen:
        return np.zeros(0), np.zeros((0, top), np.int64), np.zeros((0, top))
    return (torch.cat(chosen).numpy(), torch.cat(top_ids).numpy(),
            torch.cat(top_lps).numpy())  # fmt: skip


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
