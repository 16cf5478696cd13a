"""The recurrent layers against their equations, and the single-step path against the window."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor, nn

from charlstm.config import CELLS
from charlstm.formats.checkpoint import load_checkpoint
from charlstm.generate.torch_engine import Stepper
from charlstm.model.language_model import LanguageModel, ModelConfig
from charlstm.model.layers import (
    SLSTM,
    STATE_PARTS,
    CoupledLSTM,
    MogrifierLSTM,
    PeepholeLSTM,
    gru_reference_step,
    gru_weights_from_torch,
    lstm_reference_step,
    lstm_weights_from_torch,
    make_recurrent,
    reference_step,
    reference_weights,
)

B, T, IN, H, L = 3, 5, 6, 8, 2  # IN != H, so a transposed weight cannot pass by accident


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def parts(state) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def random_state(cell: str, dtype: torch.dtype = torch.float32):
    """A random state in torch's convention: h alone for gru and rnn, else a tuple. The sLSTM's
    normaliser n is positive (it is at least 1 after any step) and its stabiliser m any number."""
    parts = [torch.randn(L, B, H, dtype=dtype) for _ in range(STATE_PARTS[cell])]
    if cell == "slstm":
        parts[2] = 1 + torch.rand(L, B, H, dtype=dtype) * 3
    return tuple(parts) if len(parts) > 1 else parts[0]


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


OWN_CELLS = ["peephole", "coupled", "mogrifier", "slstm"]


@pytest.mark.parametrize("cell", OWN_CELLS)
def test_own_cells_pass_gradients_to_every_parameter(cell: str) -> None:
    layer = make_recurrent(cell, IN, H, L, dropout=0.0)
    x = torch.randn(B, T, IN, requires_grad=True)
    out, (h, c, *_) = layer(x, random_state(cell))
    (out.square().sum() + h.sum() + c.sum()).backward()
    for name, p in [("x", x), *layer.named_parameters()]:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cell", OWN_CELLS)
def test_own_cells_start_with_a_high_forget_bias(cell: str) -> None:
    layer = make_recurrent(cell, IN, H, L, dropout=0.0)
    block = 0 if cell == "coupled" else 1
    # The sLSTM's spreads over [3, 6] (xLSTM's small_init): long memories from the start.
    want = torch.linspace(3.0, 6.0, H) if cell == "slstm" else torch.ones(H)
    for k in range(L):
        forget = layer.layer_weights(k)[2][block * H : (block + 1) * H]
        torch.testing.assert_close(forget, want, rtol=0, atol=0)


# ---------------------------------------------------------------- the cells after 2017
#
# The Mogrifier LSTM (Melis et al., 2020) and the sLSTM (Beck et al., 2024): the training path
# against the equations written line by line from each paper (cells.*_reference_step), in
# float64, outputs and gradients (inputs, every state part, every parameter) to 1e-5.


def reference_window(cell: str, layer, x: Tensor, state: tuple[Tensor, ...]):
    """The layer's window by its equations: one reference step at a time, layer by layer, on
    differentiable views of the layer's own parameters."""

    def step(x_t, *args):
        return reference_step(cell, x_t, args[:-1], args[-1])

    weights = [reference_weights(cell, layer, k) for k in range(L)]
    return stack_layers(step, weights, x, list(state))


@pytest.mark.parametrize(("cell", "rounds"), [("mogrifier", 5), ("mogrifier", 4),
                                              ("mogrifier", 0), ("slstm", 0)])  # fmt: skip
@pytest.mark.parametrize("fresh", [False, True])
def test_new_cells_follow_their_papers_outputs_and_gradients(cell, rounds, fresh) -> None:
    layer = make_recurrent(cell, IN, H, L, dropout=0.0, rounds=rounds).double()
    perturb_(layer)  # away from the initial values, so every term matters
    x = torch.randn(B, T, IN, dtype=torch.float64, requires_grad=True)
    state = random_state(cell, torch.float64)
    if fresh:  # the zero state: the sLSTM's fresh-state branch (n = 0)
        state = tuple(torch.zeros_like(s) for s in state)
    state = tuple(s.requires_grad_() for s in state)
    proj = [torch.randn(B, T, H, dtype=torch.float64), *(torch.randn_like(s) for s in state)]
    # The sLSTM's final c, n and m are left out of the loss: m is a choice of scale for c and n
    # (see below), which training does not differentiate; h and the outputs do not depend on it.
    keep = 1 if cell == "slstm" else 2
    wrt = [x, *state, *layer.parameters()]

    def loss(out, final):
        return some_loss(out, list(final[:keep]), proj[: 1 + keep])

    out, final = layer(x, state)
    expected = [out, *final, *grads_of(loss(out, final), wrt)]
    out, final = reference_window(cell, layer, x, state)
    got = [out, *final, *grads_of(loss(out, final), wrt)]
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)
    if cell == "mogrifier":
        q, r = layer.mogrifier_weights(0)
        assert (q.shape[0], r.shape[0]) == ((rounds + 1) // 2, rounds // 2)


def test_mogrifier_rounds_change_the_cell() -> None:
    x = torch.randn(B, T, IN)
    mog = make_recurrent("mogrifier", IN, H, L, 0.0, rounds=5)
    plain = make_recurrent("mogrifier", IN, H, L, 0.0, rounds=0)  # the LSTM (tested above)
    plain.load_state_dict({k: v for k, v in mog.state_dict().items() if "mogrifier_" not in k},
                          strict=False)  # fmt: skip
    assert plain.mogrifier_weights(0)[0].numel() == 0
    assert not torch.allclose(mog(x)[0], plain(x)[0])


def test_slstm_stabiliser_is_only_a_scale() -> None:
    """(c, n, m) and (c·e^−δ, n·e^−δ, m + δ) are the same state: the outputs agree."""
    layer = make_recurrent("slstm", IN, H, L, dropout=0.0).double()
    x = torch.randn(B, T, IN, dtype=torch.float64)
    h, c, n, m = random_state("slstm", torch.float64)
    delta = 7.0 * torch.randn_like(m)
    out, final = layer(x, (h, c, n, m))
    shifted, final2 = layer(x, (h, c * torch.exp(-delta), n * torch.exp(-delta), m + delta))
    torch.testing.assert_close(shifted, out, rtol=0, atol=1e-10)
    torch.testing.assert_close(final2[0], final[0], rtol=0, atol=1e-10)
    # After any step n ≥ 1 (one of i', f' is 1): the division is safe, even from a fresh state
    # whose input gate is tiny.
    with torch.no_grad():
        layer.bias_l0[:H].fill_(-500.0)  # ĩ ≈ −500: exp(ĩ) underflows without the stabiliser
    out, (_, _, n, _) = layer(x)
    assert torch.isfinite(out).all() and (n >= 1 - 1e-12).all()


def test_the_model_carries_every_state_part_between_windows() -> None:
    """A window split in two, the state carried, gives the whole window's outputs."""
    for cell in ("mogrifier", "slstm"):
        model = language_model(cell).eval()
        ids = torch.randint(0, V, (B, 2 * T))
        with torch.no_grad():
            whole, _ = model(ids)
            first, state = model(ids[:, :T])
            second, _ = model(ids[:, T:], state)
        assert len(state) == STATE_PARTS[cell]
        torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=0, atol=1e-5)


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
    parts = STATE_PARTS[cell]
    zeros = tuple(torch.zeros(L, B, H) for _ in range(parts))
    zeros = zeros if parts > 1 else zeros[0]  # torch's convention
    if parts > 1:
        assert len(state) == parts and all(s.shape == (L, B, H) for s in state)
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
        "mogrifier": MogrifierLSTM,
        "slstm": SLSTM,
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


# ---------------------------------------------------------------- every command, the new cells


@pytest.mark.parametrize("cell", ["mogrifier", "slstm"])
def test_new_cells_train_sample_evaluate_visualize_and_resume(tmp_path, play_file, cell) -> None:
    from typer.testing import CliRunner

    from charlstm.cli.commands import app

    runner = CliRunner()
    run = tmp_path / "ck" / "r"
    train = ["train", str(play_file), "--cell", cell, "--hidden", "16", "--layers", "2",
             "--lr", "1e-2", "--dropout", "0", "--steps", "30", "--eval-every", "15", "-b", "4",
             "-t", "16", "--threads", "1", "--checkpoints", str(tmp_path / "ck"), "--name", "r",
             "--json", "--mogrifier-rounds", "3"]  # fmt: skip
    r = runner.invoke(app, train)
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["val_losses"][-1] < summary["val_losses"][0]
    r = runner.invoke(app, ["sample", "-m", str(run), "--length", "40", "--seed", "3",
                            "--threads", "1", "--prime", "ROMEO:"])  # fmt: skip
    assert r.exit_code == 0 and r.stdout.startswith("ROMEO:") and len(r.stdout) > 30, r.stderr
    r = runner.invoke(app, ["evaluate", str(play_file), "-m", str(run), "--json", "--threads", "1"])
    assert r.exit_code == 0 and json.loads(r.stdout)["loss"] < 4.0, r.stderr
    kind = "normalizer" if cell == "slstm" else "forget"
    r = runner.invoke(app, ["visualize", str(play_file), "-m", str(run), "--kind", kind,
                            "--max-chars", "100", "--threads", "1"])  # fmt: skip
    assert r.exit_code == 0 and r.stdout.startswith("position\tchar\t"), r.stderr
    r = runner.invoke(app, ["train", "--resume", str(run), "--steps", "10", "--threads", "1",
                            "--json"])  # fmt: skip
    assert r.exit_code == 0 and json.loads(r.stdout)["steps"] == 40, r.stderr
    if cell == "mogrifier":  # the rounds are part of the model, saved with it
        assert load_checkpoint(run / "last.pt")["model_config"]["mogrifier_rounds"] == 3
    else:  # the carried state holds all four parts
        assert len(load_checkpoint(run / "last.pt")["resume"]["rnn_state"]) == 4
