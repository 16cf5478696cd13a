"""Generating with torch: the prime warms the state in one full-window pass, then every new
token costs one step of the fast path (step.py) and one choice by the shared rule (choice.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from charlstm.config import SampleConfig
from charlstm.generate.choose import Utf8Rows, choose
from charlstm.generate.torch_engine import Stepper
from charlstm.model.language_model import LanguageModel


@torch.inference_mode()
def generate(
    model: LanguageModel,
    prime_ids: torch.Tensor,
    cfg: SampleConfig,
    rng: np.random.Generator,
    batch: int = 1,
    utf8: Utf8Rows | None = None,
) -> Iterator[np.ndarray]:
    """Yield the ids (batch,) of each new token as soon as it is chosen; `rng` gives each
    step's draws, one per row; `utf8` keeps a byte-level vocabulary's rows valid UTF-8.

    prime_ids (P,) with P >= 1 warms the state; its last token's prediction is the first choice.
    """
    model.eval()
    prime = prime_ids.long().view(1, -1).expand(batch, -1)
    logits, state = model(prime)  # (B, P, V)
    last = logits[:, -1]  # (B, V)
    stepper = Stepper(model)
    stepper.start(state)
    for _ in range(cfg.length):
        allowed = None if utf8 is None else utf8.allowed()
        token = choose(last.float().cpu().numpy(), cfg, rng.random(batch), allowed)  # (B,)
        if utf8 is not None:
            utf8.push(token)
        yield token
        last = stepper.step(torch.from_numpy(token).to(last.device))
