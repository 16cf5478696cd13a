"""Sampling: a pure next-token choice, and a generator of decoded text pieces.

The prime text warms the state in one full-window pass; then every new token costs one
recurrent step through the cells' fast single-step path (the prefix is never re-run).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from charlstm.cells import make_stepper
from charlstm.config import SampleConfig
from charlstm.model import LanguageModel


def choose_next(
    logits: torch.Tensor,
    cfg: SampleConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token of each row of logits (B, V) → ids (B,)."""
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / cfg.temperature
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

    prime_ids (P,) with P >= 1 warms the state; its last token's prediction is the first choice.
    """
    model.eval()
    prime = prime_ids.long().view(1, -1).expand(batch, -1)
    logits, state = model(prime)  # (B, P, V)
    last = logits[:, -1]  # (B, V)
    if FusedLSTM.fits(model):
        fused = FusedLSTM(model, state)
        for _ in range(cfg.length):
            token = choose_next(last, cfg, generator)  # (B,)
            yield token
            last = fused.step(token)
        return
    stepper = make_stepper(model.cfg.cell, model.rnn)
    embed = model.embed.weight
    for _ in range(cfg.length):
        token = choose_next(last, cfg, generator)  # (B,)
        yield token
        out, state = stepper.step(embed[token], state)  # (B, H)
        last = model.logits(out)


class FusedLSTM:
    """The whole model's next-token step for torch's LSTM under a full softmax, with one matrix
    multiply per layer, every buffer allocated once and the state updated in place:

        fused = FusedLSTM(model, state)     # state (h, c), (L, B, H) each, e.g. after a prime
        logits = fused.step(tokens)         # tokens (B,) → logits (B, V), a view of a buffer

    Layer 0's input projection is folded into a table (embedding · W_ih + biases, V × 4H), so
    its step reads a row and multiplies only h; every later layer keeps [input | own h] side by
    side in one buffer and multiplies it by [W_ih; W_hh] at once. Gates are reordered to
    [i | f | o | g] so one sigmoid covers three of them. The returned logits are overwritten by
    the next step.
    """

    @staticmethod
    def fits(model: LanguageModel) -> bool:
        rnn = model.rnn
        return (
            model.cfg.cell == "lstm" and isinstance(rnn, torch.nn.LSTM) and rnn.bias
            and not rnn.bidirectional and not rnn.proj_size
            and isinstance(model.head, torch.nn.Linear)
        )  # fmt: skip

    @torch.inference_mode()
    def __init__(self, model: LanguageModel, state: tuple[torch.Tensor, torch.Tensor]) -> None:
        rnn, hid = model.rnn, model.cfg.hidden_size
        h, c = state
        layers, batch = h.shape[0], h.shape[1]

        def weights(k: int, name: str) -> torch.Tensor:  # (G·H, …) in [ i | f | o | g ] order
            w = getattr(rnn, f"{name}_l{k}").detach()
            i, f, g, o = w.chunk(4)
            return torch.cat([i, f, o, g])

        bias0 = weights(0, "bias_ih") + weights(0, "bias_hh")
        self.table = torch.addmm(bias0, model.embed.weight.detach(), weights(0, "weight_ih").T)
        self.w_h0 = weights(0, "weight_hh").T.contiguous()  # (H, 4H)
        self.h0 = h[0].clone()  # layer 0's own h
        self.w = [None] + [
            torch.cat([weights(k, "weight_ih").T, weights(k, "weight_hh").T]).contiguous()
            for k in range(1, layers)
        ]  # (2H, 4H) each
        self.b = [None] + [weights(k, "bias_ih") + weights(k, "bias_hh") for k in range(1, layers)]
        # xh[k] = [ layer k-1's new h | layer k's own h ], the input of one multiply.
        self.xh = [None] + [torch.cat([h[k - 1], h[k]], dim=1) for k in range(1, layers)]
        self.own = [self.h0] + [xh[:, hid:] for xh in self.xh[1:]]  # each layer's h
        self.c = c.clone()  # (L, B, H), updated in place
        self.z = h.new_empty(batch, 4 * hid)
        self.sig, self.cand = self.z[:, : 3 * hid], self.z[:, 3 * hid :]
        self.i, self.f, self.o, _ = self.z.split(hid, dim=1)
        self.tanh_c = h.new_empty(batch, hid)
        self.w_out = model.head.weight.detach().T.contiguous()  # (H, V)
        self.b_out = model.head.bias.detach()
        self.logits = h.new_empty(batch, self.w_out.shape[1])

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        z = self.z
        torch.index_select(self.table, 0, tokens, out=z)
        z.addmm_(self.h0, self.w_h0)
        for k in range(len(self.own)):
            if k:
                torch.addmm(self.b[k], self.xh[k], self.w[k], out=z)
            self.sig.sigmoid_()
            self.cand.tanh_()
            c = self.c[k]
            c.mul_(self.f).addcmul_(self.i, self.cand)  # c = f ⊙ c + i ⊙ g
            torch.tanh(c, out=self.tanh_c)
            torch.mul(self.tanh_c, self.o, out=self.own[k])  # h = o ⊙ tanh(c)
            if k + 1 < len(self.own):
                self.xh[k + 1][:, : self.own[k].shape[1]].copy_(self.own[k])
        return torch.addmm(self.b_out, self.own[-1], self.w_out, out=self.logits)
