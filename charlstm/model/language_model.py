"""The language model: embedding → multi-layer recurrent cells → (with --attention, the SHA-RNN
block: model/attention.py) → linear head over the vocabulary.

forward(ids (B, T), state) → (logits (B, T, V), state), the state a `cells.State` tuple, with
--attention's memory (M, B, H) as its last part. The
recurrent layers (torch's fused LSTM/GRU/RNN, our own peephole, coupled-gate, Mogrifier and
sLSTM cells, or the scanned minGRU and minLSTM) come from model/layers.make_recurrent; the
one-token fast path over this model is generate/torch_engine.py.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from charlstm.config import ModelConfig
from charlstm.model.attention import Attention
from charlstm.model.layers import State, make_recurrent, run_layer


class LanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_size)
        self.rnn = make_recurrent(
            cfg.cell, cfg.embed_size, cfg.hidden_size, cfg.num_layers, cfg.dropout,
            rounds=cfg.mogrifier_rounds,
        )  # fmt: skip
        self.drop = nn.Dropout(cfg.dropout)
        # SHA-RNN's head over the top layer's past; its memory is the state's last part.
        self.attend = None
        if cfg.attention:
            self.attend = Attention(cfg.hidden_size, cfg.attention, cfg.dropout)
        self.head: nn.Module
        if cfg.softmax_cutoffs:
            self.head = nn.AdaptiveLogSoftmaxWithLoss(
                cfg.hidden_size, cfg.vocab_size, cfg.softmax_cutoffs, div_value=4.0
            )
        else:
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

    def forward(
        self, ids: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """(logits (B, T, V), state); with `targets` (B, T), the loss in nats of each target
        instead, (B, T), 0 where the target is -100 (padding). The loss path never builds the
        full distribution when the softmax is adaptive."""
        x = self.drop(self.embed(ids))  # (B, T, E); dropout on the inputs too (Zaremba et al.)
        out, state = self._recur(x, state)  # (B, T, H)
        out = self.drop(out)
        if targets is None:
            return self.logits(out), state
        return self.nll(out, targets), state

    def _recur(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        if self.attend is None:
            return self._layers(x, state)
        mem = None if state is None else state[-1]  # (M, B, H)
        out, rnn_state = self._layers(x, None if state is None else state[:-1])
        out, mem, _ = self.attend(out, mem)
        return out, (*rnn_state, mem)

    def _layers(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        p, cell = self.cfg.weight_drop, self.cfg.cell
        if not (self.training and p > 0):
            return run_layer(cell, self.rnn, x, state)
        # The recurrent matrices (torch's weight_hh_l*, our cells' weight_h_l*) with entries
        # dropped for this window; gradients reach the kept entries of the real parameters.
        dropped = {
            name: F.dropout(w, p)
            for name, w in self.rnn.named_parameters()
            if name.startswith(("weight_hh_l", "weight_h_l"))
        }

        def layer(x: torch.Tensor, s: object) -> object:
            return torch.func.functional_call(self.rnn, dropped, (x, s))

        return run_layer(cell, layer, x, state)

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """Unnormalised scores (…, V) from the top layer's output (…, H). For an adaptive head
        these are log-probabilities, which softmax and cross-entropy treat alike."""
        if isinstance(self.head, nn.AdaptiveLogSoftmaxWithLoss):
            with _full_precision(out):
                flat = self.head.log_prob(out.reshape(-1, out.shape[-1]).float())
            return flat.view(*out.shape[:-1], -1)
        return self.head(out)

    def nll(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Loss (nats) of each target (…), 0 where the target is -100."""
        if isinstance(self.head, nn.AdaptiveLogSoftmaxWithLoss):
            flat_t = targets.reshape(-1)
            keep = flat_t != -100
            losses = out.new_zeros(flat_t.shape, dtype=torch.float32)
            if bool(keep.any()):
                picked = out.reshape(-1, out.shape[-1])[keep].float()
                with _full_precision(out):
                    losses[keep] = -self.head(picked, flat_t[keep]).output
            return losses.view(targets.shape)
        logits = self.head(out)
        return F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def with_vocabulary(model: LanguageModel, vocab_size: int) -> LanguageModel:
    """A copy of `model` for a vocabulary grown to `vocab_size`: the old tokens keep their ids and
    weights; each new one gets the mean of the old embeddings as input, and as output a zero
    weight row and a bias far below every old one, so it starts as rare, not as noise: the
    old tokens' probabilities do not move (to ~1e-9) until training teaches the new ones."""
    old_v, cfg = model.cfg.vocab_size, model.cfg
    if vocab_size == old_v:
        return model
    if vocab_size < old_v or cfg.softmax_cutoffs:
        raise ValueError("a vocabulary only grows, and only under a full softmax")
    grown = LanguageModel(replace(cfg, vocab_size=vocab_size))
    new = grown.state_dict()
    with torch.no_grad():
        for key, value in model.state_dict().items():
            target = new[key]
            if target.shape == value.shape:
                target.copy_(value)
                continue
            target[:old_v] = value  # embed.weight, head.weight (V, ·) or head.bias (V,)
            if key == "embed.weight":
                target[old_v:] = value.mean(dim=0)
            elif key == "head.weight":
                target[old_v:] = 0.0
            elif key == "head.bias":
                target[old_v:] = value.min() - 20.0 - math.log(vocab_size - old_v)
        if cfg.tie_weights:  # one matrix for both: the new rows stay zero, as outputs must
            new["embed.weight"][old_v:] = 0.0
    grown.load_state_dict(new)
    return grown


def _full_precision(x: torch.Tensor) -> torch.autocast:
    """No autocast: the adaptive head copies its clusters' bf16 outputs into float32 tensors
    (index_copy_), which refuses mixed dtypes; its few small products run in float32."""
    return torch.autocast(device_type=x.device.type, enabled=False)
