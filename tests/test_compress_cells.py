"""Every cell compresses exactly: its traced plan run in integers (compress/exact.py) gives the
same frequencies on numpy and torch at any thread count, round trips, tracks the float model,
and the fingerprint names the plan."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from charlstm.cells import CELLS
from charlstm.cells.base import fact
from charlstm.compress.codec import Codec
from charlstm.compress.exact import ExactModel
from charlstm.data.tokenizer import CharTokenizer
from charlstm.model.language_model import LanguageModel, ModelConfig

from .conftest import PLAY

TOK = CharTokenizer.train(PLAY)


def _model(cell: str, seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=TOK.vocab_size, hidden_size=12, embed_size=10, num_layers=2,
                      cell=cell, mogrifier_rounds=3)  # fmt: skip
    net = LanguageModel(cfg).eval()
    # Larger than the initialisation, so the gates leave their middles; not the min cells,
    # whose h has no ceiling (g(a) = a + ½): at 3× it reaches 15 and the float model turns
    # as sensitive as the peephole's below.
    scale = 1.0 if fact(CELLS[cell], "PARALLEL") else 3.0
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


def _trace(exact: ExactModel, engine: str, threads: int, tokens: np.ndarray) -> np.ndarray:
    torch.set_num_threads(threads)
    run = exact.start(tokens.shape[1], engine)
    out = []
    for step in tokens:
        out.append(run.frequencies())
        run.advance(step, hold=step == 0)
    return np.stack(out)


@pytest.mark.parametrize("cell", list(CELLS))
def test_every_cell_round_trips_on_the_other_engine_and_thread_count(cell):
    net = _model(cell)
    exact = ExactModel.from_model(net, start_token=0)
    tokens = np.random.default_rng(1).integers(0, TOK.vocab_size, size=(40, 5))
    base = _trace(exact, "torch", os.cpu_count() or 1, tokens)
    assert np.array_equal(base, _trace(exact, "numpy", 1, tokens))
    assert np.array_equal(base, _trace(exact, "torch", 1, tokens))
    assert (base >= 0).all() and (base.sum(axis=2) == (1 << 24) - base.shape[2]).all()
    data = PLAY.encode()[:600] + "✓ naïve\n".encode()
    torch.set_num_threads(os.cpu_count() or 1)
    blob = Codec(net, TOK, engine="torch").compress(data, segments=3)
    torch.set_num_threads(1)
    assert Codec(net, TOK, engine="numpy").decompress(blob) == data


@pytest.mark.parametrize("cell", list(CELLS))
def test_every_cell_tracks_the_float_model(cell):
    """The integers give the float model's probabilities closely (the tables' 2^-15 steps; the
    peephole at these weights is the most sensitive: a 2^-16 nudge of its weights moves them by
    7e-4, ours by 6e-3), and the same code length to 0.1%."""
    net = _model(cell)
    exact = ExactModel.from_model(net, start_token=0)
    ids = TOK.encode(PLAY[:200]).astype(np.int64)
    with torch.no_grad():
        logits, _ = net(torch.tensor([[0, *ids[:-1]]]))
    p_float = torch.softmax(logits[0].double(), -1).numpy()
    run = exact.start(1, "numpy")
    freqs = []
    for t in ids:
        freqs.append(run.frequencies()[0])
        run.advance(np.array([t]))
    p_exact = (np.stack(freqs) + 1)[:, :-1] / (1 << 24)
    assert np.abs(p_exact - p_float).max() < 1e-2
    rows = np.arange(len(ids))
    bits_exact = -np.log2(p_exact[rows, ids]).sum()
    bits_float = -np.log2(p_float[rows, ids]).sum()
    assert bits_exact == pytest.approx(bits_float, rel=1e-3)


def test_the_fingerprint_names_the_plan():
    for cell in ("lstm", "gru"):
        exact = ExactModel.from_model(_model(cell), start_token=0)
        before = exact.fingerprint()
        ops = tuple(dataclasses.replace(o, kind="sigmoid") if o.kind == "tanh" else o
                    for o in exact.plan.ops)  # fmt: skip
        exact.plan, exact._fingerprint = dataclasses.replace(exact.plan, ops=ops), None
        assert exact.fingerprint() != before
    assert (ExactModel.from_model(_model("gru"), 0).fingerprint()
            != ExactModel.from_model(_model("rnn"), 0).fingerprint())  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cell", list(CELLS))
def test_a_gpu_computes_every_cells_integers(cell):
    exact = ExactModel.from_model(_model(cell), start_token=0)
    tokens = np.random.default_rng(2).integers(0, TOK.vocab_size, size=(20, 3))
    runs = [exact.start(3, "torch", device) for device in ("cpu", "cuda")]
    for step in tokens:
        assert np.array_equal(runs[0].frequencies(), runs[1].frequencies())
        for run in runs:
            run.advance(step)
