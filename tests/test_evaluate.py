import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlstm.evaluate import evaluate_ids, token_losses
from charlstm.model import LanguageModel, ModelConfig


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
    # Parallel streams restart from zero state only at their starts: nearly the same figure.
    assert evaluate_ids(model, ids, streams=8).loss == pytest.approx(exact.loss, abs=0.05)
    assert model.training is False
