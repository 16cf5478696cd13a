"""Loss, perplexity and bits per character of a text, computed exactly: every token predicted
once, with the recurrent state carried through the text.

The text is cut into S contiguous streams run side by side (S = 1 is one sequential pass); each
stream starts from a zero state, so S only changes the first few predictions of each stream.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

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


@torch.no_grad()
def evaluate_ids(
    model: LanguageModel,
    ids: np.ndarray,
    *,
    streams: int = 32,
    window: int = 256,
    chars: int | None = None,
) -> EvalResult:
    """Exact mean cross-entropy over all next-token predictions of `ids`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x, y = eval_streams(ids, streams)  # each (S, L)
    x, y = x.to(device), y.to(device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    state = None
    for start in range(0, x.shape[1], window):
        logits, state = model(x[:, start : start + window], state)  # (S, T, V)
        target = y[:, start : start + window]
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            target.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        ).double()
    model.train(was_training)
    n = len(ids) - 1
    return EvalResult(loss=float(total) / n, tokens=n, chars=n if chars is None else chars)
