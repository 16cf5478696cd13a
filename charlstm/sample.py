"""Sampling: a pure next-token choice, and a generator of the ids chosen.

The prime text warms the state in one full-window pass; then every new token costs one
recurrent step through the fast path of step.py (the prefix is never re-run).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from charlstm.config import SampleConfig
from charlstm.errors import CharlstmError
from charlstm.model import LanguageModel
from charlstm.step import Stepper


class ModelOutputError(CharlstmError):
    """The model's next-token scores are not numbers."""


def choose_next(
    logits: torch.Tensor,
    cfg: SampleConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token of each row of logits (B, V) → ids (B,)."""
    if not bool(torch.isfinite(logits).all()):
        raise ModelOutputError(
            "the model's output holds NaN or infinity: its weights are damaged or diverged"
        )
    scaled = logits.float() / cfg.temperature if cfg.temperature > 0 else logits
    if cfg.temperature == 0 or not bool(torch.isfinite(scaled).all()):
        return logits.argmax(dim=-1)  # a temperature so low it overflows is greedy
    logits = scaled
    if 0 < cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach top_p (the first always stays).
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= cfg.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(
    model: LanguageModel,
    prime_ids: torch.Tensor,
    cfg: SampleConfig,
    generator: torch.Generator | None = None,
    batch: int = 1,
) -> Iterator[torch.Tensor]:
    """Yield the ids (batch,) of each new token as soon as it is chosen.

    prime_ids (P,) with P >= 1 warms the state in one full-window pass; its last token's
    prediction is the first choice; every later token costs one step of the fast path.
    """
    model.eval()
    prime = prime_ids.long().view(1, -1).expand(batch, -1)
    logits, state = model(prime)  # (B, P, V)
    last = logits[:, -1]  # (B, V)
    stepper = Stepper(model)
    stepper.start(state)
    for _ in range(cfg.length):
        token = choose_next(last, cfg, generator)  # (B,)
        yield token
        last = stepper.step(token)
