"""The cells (cells/) against their papers and the training layers, the engines against the cells,
and the single-step path against the window."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from charlstm.cells import CELLS as CELLS_BY_NAME
from charlstm.cells.base import bind, fact, layer_shapes
from charlstm.config import CELLS
from charlstm.export.trace import trace
from charlstm.formats.checkpoint import load_checkpoint
from charlstm.generate.numpy_ops import NUMPY, numpy_program
from charlstm.generate.plan import fold_recurrent, lay_out
from charlstm.generate.torch_engine import FUSE, Stepper, torch_program
from charlstm.model.language_model import LanguageModel, ModelConfig
from charlstm.model.layers import (
    SLSTM,
    STATE_PARTS,
    CoupledLSTM,
    MogrifierLSTM,
    PeepholeLSTM,
    make_recurrent,
    run_layer,
)
from charlstm.model.ops import TORCH
from charlstm.model.scan import ParallelLayer
from charlstm.model.weights import step_layers

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


# ---------------------------------------------------------------- the definitions, by hand
#
# cells/lstm.py and cells/gru.py against the papers' equations (torch's documented GRU),
# worked out with `math` for one unit and one input, each gate with weights of its own.


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def _one_unit(cell, gates: dict[str, tuple[float, ...]]) -> dict[str, Tensor]:
    """A 1-unit layer in the step layout from per-gate (w_x, w_h, b[, b_h]) by BLOCKS letter."""
    names = ("w_x", "w_h", "b", "b_h")[: len(next(iter(gates.values())))]
    layer = {n: torch.tensor([gates[g][j] for g in cell.BLOCKS], dtype=torch.float64)
             for j, n in enumerate(names)}  # fmt: skip
    layer["w_x"], layer["w_h"] = layer["w_x"][None], layer["w_h"][None]  # (1, G)
    return layer


def test_lstm_and_gru_steps_are_the_papers_equations_by_hand() -> None:
    x, h, c = 0.7, -0.2, 0.4
    gates = {"i": (0.5, -0.3, 0.1), "f": (-0.4, 0.8, 1.0), "o": (0.9, 0.2, -0.5),
             "g": (1.2, -0.7, 0.3)}  # fmt: skip
    pre = {g: w * x + u * h + b for g, (w, u, b) in gates.items()}
    i, f, o = _sig(pre["i"]), _sig(pre["f"]), _sig(pre["o"])
    c_new = f * c + i * math.tanh(pre["g"])  # Hochreiter & Schmidhuber; Gers et al.
    h_new = o * math.tanh(c_new)
    layer = _one_unit(CELLS_BY_NAME["lstm"], gates)
    zx = torch.tensor([[x]], dtype=torch.float64) @ layer["w_x"] + layer["b"]
    state = (torch.tensor([[h]], dtype=torch.float64), torch.tensor([[c]], dtype=torch.float64))
    got = CELLS_BY_NAME["lstm"].step(TORCH, layer, zx, state)
    assert [float(v) for v in got] == pytest.approx([h_new, c_new], abs=1e-15)

    gates = {"r": (0.5, -0.3, 0.1, 0.2), "z": (-0.4, 0.8, 1.0, -0.6),
             "n": (1.2, -0.7, 0.3, 0.45)}  # fmt: skip  (w_i, w_h, b_i, b_h)
    r, z = (_sig(w * x + b + u * h + bh) for w, u, b, bh in (gates["r"], gates["z"]))
    w, u, b, bh = gates["n"]
    n = math.tanh(w * x + b + r * (u * h + bh))
    h_new = (1 - z) * n + z * h  # torch.nn.GRU's documented equations
    layer = _one_unit(CELLS_BY_NAME["gru"], gates)
    zx = torch.tensor([[x]], dtype=torch.float64) @ layer["w_x"] + layer["b"]
    h_0 = torch.tensor([[h]], dtype=torch.float64)
    (got,) = CELLS_BY_NAME["gru"].step(TORCH, layer, zx, (h_0,))
    assert float(got) == pytest.approx(h_new, abs=1e-15)


# ---------------------------------------------------------------- the definitions vs training
#
# Each cell's step (cells/<cell>.py) over TorchOps in float64, run step by step and layer by
# layer on differentiable views of the training layer's own parameters (model/weights.py),
# against the layer's forward: torch's fused nn.LSTM/GRU/RNN, our own scans, the sLSTM's
# hand-written backward. Outputs, final state and the gradients of the input, the state and
# every parameter, to 1e-5.


def definition_window(cell_name: str, layer, x: Tensor, state: tuple[Tensor, ...]):
    """The layer's window by its cell's step (stack_layers), on its own parameters."""
    cell = CELLS_BY_NAME[cell_name]

    def step(x_t, *args):
        *s, w = args
        given = x_t if fact(cell, "INPUT_GATED") else x_t @ w["w_x"] + w["b"]
        return tuple(cell.step(TORCH, bind(cell, w), given, tuple(s)))

    return stack_layers(step, step_layers(layer, cell_name), x, list(state))


CASES = [(c, 5) for c in CELLS] + [("mogrifier", 4), ("mogrifier", 1), ("mogrifier", 0)]


@pytest.mark.parametrize(("cell", "rounds"), CASES)
@pytest.mark.parametrize("fresh", [False, True])
def test_each_cells_step_is_its_training_layer_outputs_and_gradients(cell, rounds, fresh) -> None:
    layer = make_recurrent(cell, IN, H, L, dropout=0.0, rounds=rounds).double()
    perturb_(layer)  # away from the initial values, so every term matters
    x = torch.randn(B, T, IN, dtype=torch.float64, requires_grad=True)
    state = parts(random_state(cell, torch.float64))
    if fresh:  # the zero state: the sLSTM's fresh-state branch (n = 0)
        state = tuple(torch.zeros_like(s) for s in state)
    state = tuple(s.requires_grad_() for s in state)
    proj = [torch.randn(B, T, H, dtype=torch.float64), *(torch.randn_like(s) for s in state)]
    # The sLSTM's final c, n and m are left out of the loss: m is a choice of scale for c and n
    # (see below), which training does not differentiate; h and the outputs do not depend on it.
    keep = 1 if cell == "slstm" else len(state)
    wrt = [x, *state, *layer.parameters()]

    def loss(out, final):
        return some_loss(out, list(final[:keep]), proj[: 1 + keep])

    out, final = run_layer(cell, layer, x, state)
    expected = [out, *final, *grads_of(loss(out, final), wrt)]
    out, final = definition_window(cell, layer, x, state)
    got = [out, *final, *grads_of(loss(out, final), wrt)]
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-5)
    if cell == "mogrifier":
        q, r = layer.mogrifier_weights(0)
        assert (q.shape[0], r.shape[0]) == ((rounds + 1) // 2, rounds // 2)


# ---------------------------------------------------------------- the engines vs the definitions


def random_layer(cell, rows: int, seed: int = 0, fresh_rows: int = 1) -> tuple[dict, list, list]:
    """Random float64 weights of one layer (the step layout, 3 rounds for the Mogrifier), a
    random state of `rows` rows (the sLSTM's n positive, 0 in the first `fresh_rows`: a fresh
    state) and T inputs (x (rows, I) for an INPUT_GATED cell, else zx (rows, G·H))."""
    rng = np.random.default_rng(seed)
    shapes = layer_shapes(cell, IN, H, rounds=3)
    layer = {n: rng.normal(0, 0.5, s) for n, s in shapes.items()}
    state = [rng.normal(0, 1, (rows, H)) for _ in cell.STATE]
    if cell.STATE[2:3] == ("n",):
        state[2] = np.abs(state[2]) + 1
        state[2][:fresh_rows] = 0
    width = IN if fact(cell, "INPUT_GATED") else shapes["w_x"][1]
    inputs = [rng.normal(0, 1, (rows, width)) for _ in range(T)]
    return layer, state, inputs


@pytest.mark.parametrize("cell", CELLS)
def test_numpy_ops_give_torch_ops_numbers(cell: str) -> None:
    """The same step over numpy and torch, float64, T steps: equal to 1e-12."""
    c = CELLS_BY_NAME[cell]
    layer, state, inputs = random_layer(c, B)
    p_np, p_t = bind(c, layer), bind(c, {n: torch.from_numpy(w) for n, w in layer.items()})
    s_np, s_t = tuple(state), tuple(torch.from_numpy(s) for s in state)
    for x in inputs:
        s_np = tuple(c.step(NUMPY, p_np, x, s_np))
        s_t = tuple(c.step(TORCH, p_t, torch.from_numpy(x), s_t))
        for a, b in zip(s_np, s_t, strict=True):
            np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_plan_executors_give_the_steps_numbers(cell: str, engine: str) -> None:
    """The traced step laid out on buffers (generate/plan.py) and run by each engine's
    executor, float32, T steps with the state kept in the buffers: the eager step's numbers."""
    c = CELLS_BY_NAME[cell]
    layer, state, inputs = random_layer(c, B)
    layer = {n: w.astype(np.float32) for n, w in layer.items()}
    plan = trace(c, rounds=3)
    if engine == "numpy":
        ops, fuse, run_with, to = NUMPY, frozenset(), numpy_program, np.asarray
    else:
        ops, fuse, run_with, to = TORCH, FUSE, torch_program, torch.from_numpy
    p = bind(c, {n: to(w) for n, w in layer.items()})
    buffers = {f"state:{n}": to(s.astype(np.float32)) for n, s in zip(c.STATE, state, strict=True)}
    buffers["input"] = to(np.zeros_like(inputs[0], np.float32))
    expected = tuple(to(s.astype(np.float32)) for s in state)
    run = run_with(lay_out(plan, H, IN, fuse), buffers, p)
    with torch.inference_mode():
        for x in inputs:
            x = x.astype(np.float32)
            expected = tuple(c.step(ops, p, to(x), expected))
            buffers["input"][...] = to(x)
            run()
            for name, e in zip(c.STATE, expected, strict=True):
                got = np.asarray(buffers[f"state:{name}"])
                np.testing.assert_allclose(got, np.asarray(e), rtol=0, atol=1e-5, err_msg=name)


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


@pytest.mark.parametrize("cell", CELLS)
def test_a_folded_plan_given_zx_plus_s_at_p_is_the_same_step(cell: str) -> None:
    """fold_recurrent takes a plan's zx + s @ P out for the numpy engine to compute as one
    product: every cell but the GRU (its r scales U h alone), the Mogrifier (gated input) and
    the cells with no U (minGRU, minLSTM) folds, and the rest of its plan, given that sum,
    gives the step's numbers."""
    c = CELLS_BY_NAME[cell]
    plan, fold = fold_recurrent(trace(c, rounds=3))
    assert (fold is None) == (cell in ("gru", "mogrifier") or "w_h" not in c.PARAMS)
    if fold is None:
        return
    layer, state, inputs = random_layer(c, B)
    p = bind(c, {n: w.astype(np.float32) for n, w in layer.items()})
    buffers = {f"state:{n}": s.astype(np.float32) for n, s in zip(c.STATE, state, strict=True)}
    buffers["input"] = np.zeros_like(inputs[0], np.float32)
    expected = tuple(s.astype(np.float32) for s in state)
    run = numpy_program(lay_out(plan, H, IN), buffers, p)
    part, param = fold
    for x in inputs:
        x = x.astype(np.float32)
        buffers["input"][...] = x + buffers[f"state:{part}"] @ p[param]
        expected = tuple(c.step(NUMPY, p, x, expected))
        run()
        for name, e in zip(c.STATE, expected, strict=True):
            np.testing.assert_allclose(buffers[f"state:{name}"], e, rtol=0, atol=1e-5)


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
        "mingru": ParallelLayer,
        "minlstm": ParallelLayer,
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


@pytest.mark.parametrize("cell", ["mogrifier", "slstm", "mingru", "minlstm"])
def test_new_cells_train_sample_evaluate_visualize_and_resume(tmp_path, play_file, cell) -> None:
    from typer.testing import CliRunner

    from charlstm.cli import app

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
    kind = "normalizer" if cell == "slstm" else CELLS_BY_NAME[cell].SHOWN[0]
    r = runner.invoke(app, ["visualize", str(play_file), "-m", str(run), "--kind", kind,
                            "--max-chars", "100", "--threads", "1"])  # fmt: skip
    assert r.exit_code == 0 and r.stdout.startswith("position\tchar\t"), r.stderr
    r = runner.invoke(app, ["train", "--resume", str(run), "--steps", "10", "--threads", "1",
                            "--json"])  # fmt: skip
    assert r.exit_code == 0 and json.loads(r.stdout)["steps"] == 40, r.stderr
    if cell == "mogrifier":  # the rounds are part of the model, saved with it
        assert load_checkpoint(run / "last.pt")["model_config"]["mogrifier_rounds"] == 3
    else:  # the carried state holds every part (four for the sLSTM, h alone for the min cells)
        parts = len(CELLS_BY_NAME[cell].STATE)
        assert len(load_checkpoint(run / "last.pt")["resume"]["rnn_state"]) == parts
