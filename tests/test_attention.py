"""--attention (model/attention.py, SHA-RNN's head and Boom): the batched block against a plain
loop over time written from the equations, and the model carrying its memory between windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from charlstm.cells import CELLS
from charlstm.config import ModelConfig
from charlstm.formats.checks import parameter_count
from charlstm.model.attention import Attention
from charlstm.model.language_model import LanguageModel


def _ln(v: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mean = v.mean()
    var = ((v - mean) ** 2).mean()
    return (v - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _reference(blk: Attention, h: torch.Tensor, past: list[torch.Tensor]) -> torch.Tensor:
    """One stream, h (T, H), `past` the memory's held slots (oldest first): the outputs (T, H),
    one position at a time, every sum a loop."""
    hid, m = blk.hidden, blk.memory
    sig = torch.sigmoid
    c, f = (blk.over.weight @ sig(blk.a_v) + blk.over.bias).split(hid)
    g = sig(f) * torch.tanh(c)
    past, outs = list(past), []
    for t in range(h.shape[0]):
        past.append(_ln(h[t], blk.ln_mem))
        seen = past[-(m + 1) :]  # the last M states and this one
        x = _ln(h[t], blk.ln_mid)
        q = sig(blk.a_q) * _ln(blk.q.weight @ x + blk.q.bias, blk.ln_q)
        scores = [torch.dot(q, sig(blk.a_k) * s) / math.sqrt(hid) for s in seen]
        top = max(float(z.detach()) for z in scores)
        e = [torch.exp(z - top) for z in scores]
        total = sum(e)
        mix = sum((ej / total) * (g * s) for ej, s in zip(e, seen, strict=True))
        a = x + mix
        u = blk.up.weight @ _ln(a, blk.ln_xff) + blk.up.bias
        u = u * sig(1.702 * u)
        boom = sum(u[k * hid : (k + 1) * hid] for k in range(4))
        outs.append(_ln(a, blk.ln_ff) + boom)
    return torch.stack(outs)


def _block(hid: int = 6, m: int = 4) -> Attention:
    torch.manual_seed(0)
    blk = Attention(hid, m).double()
    with torch.no_grad():  # no parameter at its neutral start: every term must count
        for p in blk.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return blk


@pytest.mark.parametrize("held", [0, 2, 4])
def test_the_block_matches_the_equations_outputs_and_gradients(held: int) -> None:
    """Outputs and gradients (input and every parameter) to 1e-5 in float64, from an empty
    memory, a part-filled one and a full one (M = 4, a window of 7 reaching past it)."""
    blk, (b, t, hid, m) = _block(), (2, 7, 6, 4)
    h = torch.randn(b, t, hid, dtype=torch.float64, requires_grad=True)
    mem = torch.zeros(m, b, hid, dtype=torch.float64)
    pasts = [[torch.randn(hid, dtype=torch.float64) for _ in range(held)] for _ in range(b)]
    for i, past in enumerate(pasts):
        for k, s in enumerate(past):
            mem[m - held + k, i] = s
    probe = torch.randn(b, t, hid, dtype=torch.float64)

    y, new_mem, _ = blk(h, mem)
    grads = torch.autograd.grad((y * probe).sum(), [h, *blk.parameters()])
    ref = torch.stack([_reference(blk, h[i], pasts[i]) for i in range(b)])
    ref_grads = torch.autograd.grad((ref * probe).sum(), [h, *blk.parameters()])

    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # The new memory: the layer-normed last M outputs, newest last.
    want_mem = torch.stack([_ln(v, blk.ln_mem) for v in h[0, -m:]])
    torch.testing.assert_close(new_mem[:, 0], want_mem, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("memory", [3, 12])
def test_the_memory_carried_across_windows_gives_one_long_windows_outputs(memory: int) -> None:
    """The whole model (LSTM + block): two windows of 5 carrying state and memory give the
    outputs of one window of 10, with M below and above the window."""
    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=9, hidden_size=8, num_layers=2, attention=memory)
    net = LanguageModel(cfg).double().eval()
    ids = torch.randint(0, 9, (3, 10))
    whole, _ = net(ids)
    first, state = net(ids[:, :5])
    second, state = net(ids[:, 5:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=1e-10, rtol=1e-9)
    assert len(state) == 3 and state[-1].shape == (memory, 3, 8)


def test_a_zeroed_stream_forgets_its_memory() -> None:
    """A zero state is an empty memory: a stream reset to zeros (training's state resets,
    evaluation's first stream) reads on as if it had just begun."""
    torch.manual_seed(2)
    net = LanguageModel(ModelConfig(vocab_size=9, hidden_size=8, attention=6)).double().eval()
    ids = torch.randint(0, 9, (2, 4))
    _, state = net(torch.randint(0, 9, (2, 8)))
    zeroed = tuple(s * torch.tensor([0.0, 1.0], dtype=s.dtype).view(1, -1, 1) for s in state)
    fresh, _ = net(ids[:1])
    again, _ = net(ids, zeroed)
    torch.testing.assert_close(again[:1], fresh, atol=1e-12, rtol=1e-12)


def test_the_parameter_count_knows_the_block() -> None:
    for attention in (0, 5):
        cfg = ModelConfig(vocab_size=11, hidden_size=8, num_layers=2, attention=attention)
        assert parameter_count(cfg) == LanguageModel(cfg).num_parameters()


@pytest.mark.parametrize("cell", list(CELLS))
def test_every_cell_takes_the_block_and_both_engines_step_it_alike(cell: str) -> None:
    """The block sits after the recurrent stack, so every cell takes it: windows cut anywhere
    give the same outputs, and the numpy and torch steppers the forward pass's logits."""
    from charlstm.data.tokenizer import CharTokenizer
    from charlstm.formats.model_file import Portable
    from charlstm.generate.numpy_engine import NumpyStepper
    from charlstm.generate.torch_engine import TorchStepper
    from charlstm.model.weights import portable_weights

    torch.manual_seed(3)
    cfg = ModelConfig(vocab_size=7, hidden_size=8, num_layers=2, cell=cell, attention=4,
                      mogrifier_rounds=2)  # fmt: skip
    net = LanguageModel(cfg).eval()
    ids = torch.randint(0, 7, (1, 9))
    with torch.no_grad():
        whole, _ = net(ids)
        first, state = net(ids[:, :3])
        rest, _ = net(ids[:, 3:], state)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), whole, atol=1e-5, rtol=1e-5)
    tok = CharTokenizer("abcdefg")
    engines = [NumpyStepper(Portable(cfg, tok, portable_weights(net))), TorchStepper(net)]
    for stepper in engines:
        got = stepper.prime(ids[0, :2].numpy())
        np.testing.assert_allclose(got[0], whole[0, 1].numpy(), atol=1e-4)
        for t in range(2, 9):  # past the memory of 4: the buffer rolls
            got = stepper.step(ids[0, t : t + 1].numpy())
            np.testing.assert_allclose(got[0], whole[0, t].numpy(), atol=1e-4, err_msg=cell)
