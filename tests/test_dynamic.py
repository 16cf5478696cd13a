"""Dynamic evaluation and learning from the prime: the model learns a text as it reads it, every
token is scored before it is learnt from, and the checkpoint never changes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlstm.api import load
from charlstm.cli import app
from charlstm.config import DynamicConfig
from charlstm.evaluation.dynamic import dynamic_losses, gradient_scale
from charlstm.evaluation.exact import token_losses
from charlstm.training.loop import fit
from tests.conftest import PLAY
from tests.helpers import tiny_run

# A text the model never saw, made of the play's characters, that repeats: what dynamic
# evaluation exists for.
NEW = "What light is this? O soft, Romeo, what light?\n" * 30
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained on the play, in a run folder with its token ids beside it."""
    run_dir = tmp_path_factory.mktemp("dyn") / "run"
    torch.manual_seed(0)
    run = tiny_run(PLAY, run_dir, hidden=32, steps=150, eval_every=150)
    with torch.random.fork_rng():
        fit(run)
    np.save(run_dir / "tokens.npy", np.concatenate([run.train_ids, run.val_ids]))
    return run_dir


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("rule", ["rms", "sgd"])
def test_dynamic_evaluation_scores_an_unseen_repetitive_text_lower(trained, rule):
    before = digest(trained / "best.pt")
    model = load(trained)
    static = model.evaluate(NEW)
    lr = 3e-4 if rule == "rms" else 3e-2
    dynamic = model.evaluate(NEW, dynamic=DynamicConfig(rule=rule, lr=lr))
    assert dynamic.loss < static.loss - 0.3, (dynamic.loss, static.loss)
    assert dynamic.tokens == static.tokens and static.dynamic is None
    assert dynamic.dynamic["rule"] == rule and dynamic.dynamic["lr"] == lr
    if rule == "rms":  # the run folder holds the training split: the paper's statistics
        assert dynamic.dynamic["gradient_scale_from"] == "training split"
    # The weights are put back: a static evaluation afterwards is what it was; the file too.
    assert model.evaluate(NEW).loss == pytest.approx(static.loss, abs=1e-9)
    assert digest(trained / "best.pt") == before


def test_every_token_is_scored_before_it_is_learnt_from(trained):
    model = load(trained)
    ids = model.encode_text(NEW).ids
    cfg = DynamicConfig(segment=16, lr=1e-3)
    scale = gradient_scale(model.net, model.training_ids(), cfg)
    dyn = dynamic_losses(model.net, ids, cfg, scale)
    static = token_losses(model.net, ids)
    assert dyn.shape == static.shape == (len(ids) - 1,)
    # The first segment is scored by the trained weights; later ones by weights that learnt.
    np.testing.assert_allclose(dyn[:16], static[:16], atol=1e-5)
    assert not np.allclose(dyn[16:32], static[16:32], atol=1e-3)
    # Learning rate 0 is static evaluation, token by token.
    frozen = dynamic_losses(model.net, ids, DynamicConfig(lr=0.0, decay=0.0), scale)
    np.testing.assert_allclose(frozen, static, atol=1e-5)


def test_without_a_training_split_the_scale_comes_from_the_text_read(trained, tmp_path):
    lone = tmp_path / "lone.pt"
    lone.write_bytes((trained / "best.pt").read_bytes())
    model = load(lone)
    assert model.training_ids() is None
    result = model.evaluate(NEW, dynamic=DynamicConfig(segment=20, lr=3e-4, decay=1e-3))
    assert result.dynamic["gradient_scale_from"] == "the text read so far"
    assert result.loss < model.evaluate(NEW).loss - 0.3


def test_the_cli_reports_dynamic_evaluation_and_leaves_the_file(trained, tmp_path):
    text = tmp_path / "new.txt"
    text.write_text(NEW)
    before = digest(trained / "best.pt")
    common = ["evaluate", str(text), "-m", str(trained), "--threads", "1", "--json"]
    static = runner.invoke(app, common)
    dynamic = runner.invoke(app, [*common, "--dynamic", "--dynamic-segment", "10"])
    assert static.exit_code == 0 and dynamic.exit_code == 0, dynamic.stderr
    s, d = json.loads(static.stdout), json.loads(dynamic.stdout)
    assert s["dynamic"] is None and d["dynamic"]["segment"] == 10 and d["streams"] == 1
    assert d["loss"] < s["loss"]
    plain = runner.invoke(app, [*common[:-1], "--dynamic"])
    assert "dynamic     rms, segment 50" in plain.stdout
    # --per-line reads the same one dynamic pass: its lines add up to the total.
    total = json.loads(runner.invoke(app, [*common, "--dynamic"]).stdout)
    per_line = runner.invoke(app, [*common[:-1], "--dynamic", "--per-line"])
    rows = [json.loads(line) for line in per_line.stdout.splitlines()]
    assert sum(r["nats"] for r in rows) == pytest.approx(total["loss"] * total["tokens"], rel=1e-6)
    bad = runner.invoke(app, [*common, "--dynamic-lr", "1e-3"])  # tuning without --dynamic
    assert bad.exit_code == 2 and "--dynamic" in bad.stderr
    assert digest(trained / "best.pt") == before


def test_adapt_learns_the_prime_and_leaves_the_model(trained):
    model = load(trained)
    weights = {k: v.clone() for k, v in model.net.state_dict().items()}
    ids = model.encode_text(NEW).ids
    before = float(token_losses(model.net, ids).mean())
    net = model.adapted(ids, passes=2)
    after = float(token_losses(net, ids).mean())
    assert after < before - 0.5, (before, after)
    for k, v in model.net.state_dict().items():  # the model itself has not moved
        assert torch.equal(v, weights[k]), k
    # Through generate: the adapted model continues the prime's refrain, the trained one not.
    prime = NEW[: 47 * 8]
    plain = "".join(model.generate(prime, length=47, greedy=True))
    steered = "".join(model.generate(prime, length=47, greedy=True, adapt=3,
                                     dynamic=DynamicConfig(lr=1e-3)))  # fmt: skip
    assert steered != plain
    assert steered.startswith("What light")
    with pytest.raises(Exception, match="adapt learns from the prime"):
        list(model.generate(None, adapt=1))


def test_sample_adapt_through_the_cli(trained):
    prime = NEW[: 47 * 8]
    base = ["sample", "-m", str(trained), "--prime", prime, "--length", "47", "--greedy",
            "--threads", "1", "--no-echo-prime"]  # fmt: skip
    plain = runner.invoke(app, base)
    steered = runner.invoke(app, [*base, "--adapt", "10"])
    assert plain.exit_code == 0 and steered.exit_code == 0, steered.stderr
    assert steered.stdout.startswith("What light") and steered.stdout != plain.stdout
    assert "learning from the prime" in steered.stderr
