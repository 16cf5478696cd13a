"""The recurrent layers against their equations, and the single-step path against the window."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from charlstm.cells import (
    CELLS_WITH_MEMORY,
    CoupledLSTM,
    PeepholeLSTM,
    gru_reference_step,
    gru_weights_from_torch,
    lstm_reference_step,
    lstm_weights_from_torch,
    make_recurrent,
)
from charlstm.config import CELLS
from charlstm.model import LanguageModel, ModelConfig
from charlstm.step import Stepper

B, T, IN, H, L = 3, 5, 6, 8, 2  # IN != H, so a transposed weight cannot pass by accident


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def parts(state) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def random_state(cell: str, dtype: torch.dtype = torch.float32):
    h = torch.randn(L, B, H, dtype=dtype)
    return (h, torch.randn(L, B, H, dtype=dtype)) if cell in CELLS_WITH_MEMORY else h


def stack_layers(step, weights: list, x: Tensor, state: list[Tensor]):
    """Run a one-step function over a window, layer after layer: the obvious, slow way.

    step(x_t, *state_k, W_k) -> new state_k (a tuple whose first item is h).
    """
    finals = []
    for k, W in enumerate(weights):
        s = tuple(part[k] for part in state)
        outs = []
        for t in range(x.shape[1]):
            s = step(x[:, t], *s, W)
            outs.append(s[0])
        x = torch.stack(outs, dim=1)
        finals.append(s)
    return x, [torch.stack([f[j] for f in finals]) for j in range(len(state))]


def grads_of(loss: Tensor, tensors: list[Tensor]) -> list[Tensor]:
    return list(torch.autograd.grad(loss, tensors))


def some_loss(out: Tensor, state: list[Tensor], proj: list[Tensor]) -> Tensor:
    # Random weights on every output, so each position's gradient is distinct.
    return sum((a * w).sum() for a, w in zip([out, *state], proj, strict=True))


# ---------------------------------------------------------------- references vs torch


def test_lstm_reference_matches_torch_outputs_and_gradients() -> None:
    lstm = nn.LSTM(IN, H, L, batch_first=True).double()
    x = torch.randn(B, T, IN, dtype=torch.float64, requires_grad=True)
    h0, c0 = random_state("lstm", torch.float64)
    h0.requires_grad_()
    c0.requires_grad_()
    proj = [torch.randn(B, T, H, dtype=torch.float64), torch.randn_like(h0), torch.randn_like(c0)]
    wrt = [x, h0, c0, *lstm.parameters()]

    out, (h, c) = lstm(x, (h0, c0))
    expected = [out, h, c, *grads_of(some_loss(out, [h, c], proj), wrt)]

    def step(x_t, h, c, W):
        return lstm_reference_step(x_t, h, c, W)

    weights = [lstm_weights_from_torch(lstm, k) for k in range(L)]
    out, (h, c) = stack_layers(step, weights, x, [h0, c0])
    got = [out, h, c, *grads_of(some_loss(out, [h, c], proj), wrt)]

    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)


def test_gru_reference_matches_torch_outputs_and_gradients() -> None:
    gru = nn.GRU(IN, H, L, batch_first=True).double()
    x = torch.randn(B, T, IN, dtype=torch.float64, requires_grad=True)
    h0 = random_state("gru", torch.float64).requires_grad_()
    proj = [torch.randn(B, T, H, dtype=torch.float64), torch.randn_like(h0)]
    wrt = [x, h0, *gru.parameters()]

    out, h = gru(x, h0)
    expected = [out, h, *grads_of(some_loss(out, [h], proj), wrt)]

    def step(x_t, h, W):
        return (gru_reference_step(x_t, h, W),)

    weights = [gru_weights_from_torch(gru, k) for k in range(L)]
    out, (h,) = stack_layers(step, weights, x, [h0])
    got = [out, h, *grads_of(some_loss(out, [h], proj), wrt)]

    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- our own cells


def peephole_step(x, h, c, layer: PeepholeLSTM, k: int):
    w_x, w_h, b, p = layer.layer_weights(k)
    W_i, W_f, W_c, W_o = w_x.split(H, dim=1)  # documented blocks [ i | f | g | o ]
    U_i, U_f, U_c, U_o = w_h.split(H, dim=1)
    b_i, b_f, b_c, b_o = b.split(H)
    p_i, p_f, p_o = p
    i = torch.sigmoid(x @ W_i + h @ U_i + b_i + p_i * c)
    f = torch.sigmoid(x @ W_f + h @ U_f + b_f + p_f * c)
    c = f * c + i * torch.tanh(x @ W_c + h @ U_c + b_c)
    o = torch.sigmoid(x @ W_o + h @ U_o + b_o + p_o * c)
    return o * torch.tanh(c), c


def coupled_step(x, h, c, layer: CoupledLSTM, k: int):
    w_x, w_h, b, _ = layer.layer_weights(k)
    W_f, W_o, W_c = w_x.split(H, dim=1)  # documented blocks [ f | o | g ]
    U_f, U_o, U_c = w_h.split(H, dim=1)
    b_f, b_o, b_c = b.split(H)
    f = torch.sigmoid(x @ W_f + h @ U_f + b_f)
    i = 1 - f
    c = f * c + i * torch.tanh(x @ W_c + h @ U_c + b_c)
    o = torch.sigmoid(x @ W_o + h @ U_o + b_o)
    return o * torch.tanh(c), c


@pytest.mark.parametrize(("cell", "step"), [("peephole", peephole_step), ("coupled", coupled_step)])
def test_own_cells_follow_their_equations(cell: str, step) -> None:
    layer = make_recurrent(cell, IN, H, L, dropout=0.0).double()
    x = torch.randn(B, T, IN, dtype=torch.float64)
    state = random_state(cell, torch.float64)
    out, (h, c) = layer(x, state)

    def ref_step(x_t, h, c, k):
        return step(x_t, h, c, layer, k)

    ref_out, (ref_h, ref_c) = stack_layers(ref_step, list(range(L)), x, list(state))
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-10)
    torch.testing.assert_close(h, ref_h, rtol=0, atol=1e-10)
    torch.testing.assert_close(c, ref_c, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell", ["peephole", "coupled"])
def test_own_cells_pass_gradients_to_every_parameter(cell: str) -> None:
    layer = make_recurrent(cell, IN, H, L, dropout=0.0)
    x = torch.randn(B, T, IN, requires_grad=True)
    out, (h, c) = layer(x, random_state(cell))
    (out.square().sum() + h.sum() + c.sum()).backward()
    for name, p in [("x", x), *layer.named_parameters()]:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cell", ["peephole", "coupled"])
def test_own_cells_start_with_forget_bias_one(cell: str) -> None:
    layer = make_recurrent(cell, IN, H, L, dropout=0.0)
    block = 1 if cell == "peephole" else 0
    for k in range(L):
        forget = layer.layer_weights(k)[2][block * H : (block + 1) * H]
        assert torch.equal(forget, torch.ones(H))


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_acts_between_layers_only_in_training(cell: str) -> None:
    layer = make_recurrent(cell, IN, H, L, dropout=0.5)
    plain = make_recurrent(cell, IN, H, L, dropout=0.0)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(B, T, IN)

    layer.eval()
    torch.testing.assert_close(layer(x)[0], plain(x)[0])

    layer.train()
    first, second = layer(x)[0], layer(x)[0]
    assert not torch.allclose(first, second)  # fresh masks each call
    assert not torch.allclose(first, plain(x)[0])


# ---------------------------------------------------------------- calling convention


@pytest.mark.parametrize("cell", CELLS)
def test_state_none_means_zeros_and_state_has_documented_shape(cell: str) -> None:
    layer = make_recurrent(cell, IN, H, L, dropout=0.0)
    x = torch.randn(B, T, IN)
    out, state = layer(x, None)
    assert out.shape == (B, T, H)
    h = torch.zeros(L, B, H)
    zeros = (h, torch.zeros_like(h)) if cell in CELLS_WITH_MEMORY else h  # torch's convention
    if cell in CELLS_WITH_MEMORY:
        h, c = state
        assert h.shape == c.shape == (L, B, H)
    else:
        assert isinstance(state, Tensor) and state.shape == (L, B, H)
    torch.testing.assert_close(layer(x, zeros)[0], out)


def test_make_recurrent_uses_torch_fused_layers_and_ours() -> None:
    kinds = {cell: type(make_recurrent(cell, IN, H, L, 0.1)) for cell in CELLS}
    assert kinds == {
        "lstm": nn.LSTM,
        "gru": nn.GRU,
        "rnn": nn.RNN,
        "peephole": PeepholeLSTM,
        "coupled": CoupledLSTM,
    }
    with pytest.raises(ValueError, match="unknown cell"):
        make_recurrent("transformer", IN, H, L, 0.0)


# ---------------------------------------------------------------- the single-step path
#
# step.Stepper runs a whole model one token at a time; it must give the training path's
# logits and state for every cell.

V = 11


def language_model(cell: str, dropout: float = 0.0) -> LanguageModel:
    cfg = ModelConfig(vocab_size=V, cell=cell, hidden_size=H, num_layers=L, embed_size=IN,
                      dropout=dropout)  # fmt: skip
    return LanguageModel(cfg)


def perturb_(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("cell", CELLS)
def test_stepper_matches_the_full_window(cell: str) -> None:
    model = language_model(cell, dropout=0.3)
    perturb_(model)  # the stepper must read the weights as they are now, not as initialised
    stepper = Stepper(model)  # built in training mode: it must still skip dropout
    model.eval()
    ids = torch.randint(0, V, (B, T))
    state0 = parts(random_state(cell))
    with torch.no_grad():
        expected, expected_state = model(ids, state0)  # (B, T, V)

    kept = [s.clone() for s in state0]
    stepper.start(state0)
    for t in range(T):
        logits = stepper.step(ids[:, t])
        assert logits.shape == (B, V)
        torch.testing.assert_close(logits, expected[:, t], rtol=0, atol=1e-5)
    for got, exp in zip(stepper.state(), expected_state, strict=True):
        torch.testing.assert_close(got, exp, rtol=0, atol=1e-5)
    # The caller's state is left as it was, so a primed state can be reused.
    for before, after in zip(kept, state0, strict=True):
        assert torch.equal(before, after)


@pytest.mark.parametrize("cell", CELLS)
def test_stepper_handles_state_none_and_a_change_of_batch(cell: str) -> None:
    model = language_model(cell).eval()
    stepper = Stepper(model)
    ids = torch.randint(0, V, (B, 2))
    with torch.no_grad():
        expected, _ = model(ids)
    stepper.step(ids[:, 0])  # never started: a zero state
    torch.testing.assert_close(stepper.step(ids[:, 1]), expected[:, 1], rtol=0, atol=1e-5)
    # Now one row at a time: the buffers must follow the batch size.
    stepper.start(stepper.zero_state(1))
    stepper.step(ids[:1, 0])
    torch.testing.assert_close(stepper.step(ids[:1, 1]), expected[:1, 1], rtol=0, atol=1e-5)
    assert all(part.shape == (L, 1, H) for part in stepper.state())


@pytest.mark.parametrize("cell", CELLS)
def test_stepper_keeps_the_weights_it_was_built_from(cell: str) -> None:
    model = language_model(cell)
    stepper = Stepper(model)
    ids = torch.randint(0, V, (B,))
    before = stepper.step(ids).clone()
    perturb_(model)
    stepper.start(stepper.zero_state(B))
    after = stepper.step(ids)
    torch.testing.assert_close(after, before)
    rebuilt = Stepper(model).step(ids)
    assert not torch.allclose(rebuilt, before)
