import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlstm.evaluation.exact import evaluate_ids, token_losses
from charlstm.model.language_model import LanguageModel, ModelConfig


def test_evaluation_equals_one_full_forward_pass():
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=9, hidden_size=16, num_layers=2)).eval()
    ids = np.random.default_rng(0).integers(0, 9, size=700).astype(np.uint16)
    seq = torch.from_numpy(ids.astype(np.int64))[None]
    with torch.no_grad():
        logits, _ = model(seq[:, :-1])
        direct = F.cross_entropy(logits[0], seq[0, 1:], reduction="none").double()
    exact = evaluate_ids(model, ids, streams=1, window=64)  # windows carry the state
    assert exact.tokens == 699
    assert exact.loss == pytest.approx(float(direct.mean()), abs=1e-6)
    assert np.allclose(token_losses(model, ids, window=50), direct.numpy(), atol=1e-5)
    # Parallel streams warm their state on the text before their starts: the same figure.
    assert evaluate_ids(model, ids, streams=8, window=16).loss == pytest.approx(
        exact.loss, abs=1e-4
    )
    assert model.training is False


@pytest.mark.parametrize("attention", [0, 24])
def test_warm_up_makes_parallel_streams_match_one_pass(attention):
    """With --attention the streams' warm-up fills their memory too (M ≤ the warm-up)."""
    from charlstm.evaluation.exact import loss_total

    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=9, hidden_size=32, num_layers=2, attention=attention)
    model = LanguageModel(cfg).eval()
    ids = np.random.default_rng(1).integers(0, 9, size=3000).astype(np.uint16)
    exact = loss_total(model, ids, streams=1)
    cold = loss_total(model, ids, streams=32, warmup=0)
    warm = loss_total(model, ids, streams=32, window=20, warmup=64)
    assert abs(warm - exact) < abs(cold - exact) / 10
    assert warm == pytest.approx(exact, rel=1e-5)
    # Split among ranks, the streams add up to the same total (stream 0 is in the first part).
    halves = [loss_total(model, ids, streams=32, window=20, warmup=64,
                         part=lambda s, k=k: slice(k * s // 2, (k + 1) * s // 2))
              for k in (0, 1)]  # fmt: skip
    assert sum(halves) == pytest.approx(warm, rel=1e-9)


def test_blocks_each_start_from_nothing():
    torch.manual_seed(2)
    model = LanguageModel(ModelConfig(vocab_size=9, hidden_size=16, num_layers=1)).eval()
    ids = np.random.default_rng(2).integers(0, 9, size=200).astype(np.uint16)
    blocks = evaluate_ids(model, ids, block=64)
    seq = torch.from_numpy(ids.astype(np.int64))
    total = 0.0
    with torch.no_grad():
        for start in range(0, 199, 64):  # each block alone, from a zero state
            x, y = seq[start : start + 64], seq[start + 1 : start + 65]
            logits, _ = model(x[None, : len(y)])
            total += float(F.cross_entropy(logits[0], y, reduction="sum"))
    assert blocks.tokens == 199 and blocks.loss == pytest.approx(total / 199, rel=1e-6)


@pytest.mark.parametrize("n_ids", [1500, 20_000])
def test_streams_match_one_pass_with_a_memory_longer_than_the_warm_up(n_ids):
    """An attention memory longer than the state's warm-up (M = 400 > 256) is warmed up too, and
    a text too short for the streams' warm-ups is read in fewer streams, not with cut ones."""
    torch.manual_seed(3)
    cfg = ModelConfig(vocab_size=9, hidden_size=16, num_layers=1, attention=400)
    model = LanguageModel(cfg).eval()
    ids = np.random.default_rng(3).integers(0, 9, size=n_ids).astype(np.uint16)
    exact = evaluate_ids(model, ids, streams=1, window=128).loss
    assert evaluate_ids(model, ids, streams=64, window=128).loss == pytest.approx(exact, abs=1e-6)
