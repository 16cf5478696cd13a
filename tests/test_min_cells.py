"""minGRU and minLSTM (Feng et al., 2024): their equations by hand, the log-space scan they train
with against T recurrent steps, gradients from a zero state, state carried across windows, and
both precisions (bf16 autocast runs the scan in float32)."""

from __future__ import annotations

import pytest
import torch

from charlstm.cells import CELLS
from charlstm.model.ops import TORCH
from charlstm.model.scan import ParallelLayer, scan_log

MIN_CELLS = ["mingru", "minlstm"]
B, T, IN, H = 3, 7, 5, 4


def g(a: torch.Tensor) -> torch.Tensor:
    """The paper's activation that keeps h positive: a + ½ for a ≥ 0, σ(a) below."""
    return torch.where(a >= 0, a + 0.5, torch.sigmoid(a))


def test_mingru_step_is_the_papers_equations_by_hand() -> None:
    torch.manual_seed(0)
    k, a, h = torch.randn(B, H, dtype=torch.float64), torch.randn(B, H), torch.rand(B, H)
    a, h = a.double(), h.double()
    z = torch.sigmoid(k)
    (got,) = CELLS["mingru"].step(TORCH, {}, torch.cat([k, a], 1), (h,))
    torch.testing.assert_close(got, (1 - z) * h + z * g(a), rtol=0, atol=1e-12)


def test_minlstm_step_is_the_papers_equations_by_hand() -> None:
    torch.manual_seed(1)
    pf, pi, pa, h = (torch.randn(B, H, dtype=torch.float64) for _ in range(4))
    f, i = torch.sigmoid(pf), torch.sigmoid(pi)
    (got,) = CELLS["minlstm"].step(TORCH, {}, torch.cat([pf, pi, pa], 1), (h,))
    want = f / (f + i) * h + i / (f + i) * g(pa)  # f' + i' = 1: the scale of h does not drift
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", MIN_CELLS)
def test_log_terms_are_the_steps_a_and_b(cell: str) -> None:
    """h_t = a_t h_{t−1} + b_t with a_t = exp(log a_t), b_t = exp(log b_t) is the step, for
    inputs far out in both tails (log space must not lose them)."""
    c = CELLS[cell]
    zx = 8 * torch.randn(B, T, len(c.BLOCKS) * H, dtype=torch.float64)
    h = torch.randn(B, T, H, dtype=torch.float64)
    log_a, log_b = c.log_terms(zx)
    (want,) = c.step(TORCH, {}, zx, (h,))
    torch.testing.assert_close(log_a.exp() * h + log_b.exp(), want, rtol=1e-12, atol=1e-12)


def recurrent(cell: str, zx: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """T recurrent steps of the cell: zx (B, T, G·H), h (B, H) -> (B, T, H)."""
    outs = []
    for t in range(zx.shape[1]):
        (h,) = CELLS[cell].step(TORCH, {}, zx[:, t], (h,))
        outs.append(h)
    return torch.stack(outs, 1)


@pytest.mark.parametrize("cell", MIN_CELLS)
@pytest.mark.parametrize("start", ["zero", "carried"])
def test_the_scan_is_t_recurrent_steps_in_float64(cell: str, start: str) -> None:
    torch.manual_seed(2)
    t = 64
    zx = 3 * torch.randn(B, t, len(CELLS[cell].BLOCKS) * H, dtype=torch.float64)
    h0 = torch.zeros(B, H, dtype=torch.float64)
    if start == "carried":  # any sign: a state written by hand, not only by the cell
        h0 = torch.randn(B, H, dtype=torch.float64)
    got = scan_log(*CELLS[cell].log_terms(zx), h0)
    torch.testing.assert_close(got, recurrent(cell, zx, h0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", MIN_CELLS)
def test_the_layer_carries_its_state_across_windows(cell: str) -> None:
    """Two windows of T, the state carried from the first, are one window of 2T (2 layers)."""
    torch.manual_seed(3)
    layer = ParallelLayer(CELLS[cell], IN, H, num_layers=2).double()
    x = torch.randn(B, 2 * T, IN, dtype=torch.float64)
    whole, h_whole = layer(x)
    first, h = layer(x[:, :T])
    second, h = layer(x[:, T:], h)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=0, atol=1e-10)
    torch.testing.assert_close(h, h_whole, rtol=0, atol=1e-10)
    assert h.shape == (2, B, H)


@pytest.mark.parametrize("cell", MIN_CELLS)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gradients_are_finite_from_a_zero_state_in_both_precisions(cell, precision) -> None:
    torch.manual_seed(4)
    layer = ParallelLayer(CELLS[cell], IN, H, num_layers=2)
    x = 4 * torch.randn(B, 64, IN)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out, h = layer(x, torch.zeros(2, B, H))
        assert out.dtype == torch.float32  # the scan ran in float32 under autocast
        out.square().mean().backward()
    grads = [p.grad for p in layer.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() and gr.abs().sum() > 0 for gr in grads)
    with torch.no_grad():
        fp32, _ = layer(x, torch.zeros(2, B, H))
    torch.testing.assert_close(out.detach(), fp32, rtol=0, atol=0.05 if precision == "bf16" else 0)
