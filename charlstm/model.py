"""The language model: embedding → multi-layer recurrent cells → linear head over the vocabulary.

forward(ids (B, T), state) → (logits (B, T, V), state). The recurrent layers (torch's fused
LSTM/GRU/RNN, or our own peephole and coupled-gate LSTMs) live in cells.py.
"""

from __future__ import annotations

import torch
from torch import nn

from charlstm.cells import make_recurrent
from charlstm.config import ModelConfig

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class LanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_size)
        self.rnn = make_recurrent(
            cfg.cell, cfg.embed_size, cfg.hidden_size, cfg.num_layers, cfg.dropout
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        # torch's N(0, 1) embedding init: measured faster to learn than small uniform values.
        if cfg.tie_weights:
            self.head.weight = self.embed.weight
        if cfg.cell == "lstm":
            # Forget-gate bias 1: remember by default early in training (Jozefowicz et al. 2015).
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_ih"):
                    h = cfg.hidden_size
                    with torch.no_grad():
                        p[h : 2 * h].fill_(1.0)  # torch's block order is i, f, g, o

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        x = self.embed(ids)  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H)
        return self.head(self.drop(out)), state  # (B, T, V)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def model_from_checkpoint(ckpt: dict) -> LanguageModel:
    """Rebuild the model a checkpoint describes, with its weights."""
    model = LanguageModel(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model


def detach_state(state: State) -> State:
    """Cut the graph between truncated-BPTT windows while keeping the values."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()
