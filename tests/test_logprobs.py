"""Log-probabilities: each sampled token's is the log of its probability under the distribution it
was drawn from (checked against the model's own logits with the temperature, top-k and top-p
applied here afresh in torch), the top K are that distribution's; numpy and torch engines agree;
`evaluate --per-token` is one pass whose figures average to evaluate's loss; the CLI's JSON
shape and its bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import charlstm
from charlstm.cli import app as cli
from charlstm.errors import OptionError
from charlstm.generate.logprobs import Token, TokenLog

from .conftest import PLAY

TINY = {"hidden": 24, "layers": 2, "batch_size": 4, "window": 16, "lr": 1e-2, "warmup": 5,
        "threads": 1, "precision": "fp32"}  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("logprobs")
    corpus = root / "play.txt"
    corpus.write_text(PLAY, encoding="utf-8")
    charlstm.train([str(corpus)], steps=40, name="tiny", checkpoints=root / "ck", **TINY)
    return root / "ck" / "tiny"


def reference(logits: torch.Tensor, temp: float, top_k: int, top_p: float) -> torch.Tensor:
    """log p (V,) of the distribution sampling draws from, written afresh: the logits over the
    temperature (0: 1), the k best kept, then the smallest head of the sorted probabilities
    whose sum reaches top_p."""
    z = logits.double() / (temp or 1.0)
    if top_k:
        z = torch.where(z < z.topk(top_k).values[-1], -math.inf, z)
    p = torch.softmax(z, -1)
    if top_p < 1:
        ranked, order = p.sort(descending=True, stable=True)
        keep = (ranked.cumsum(0) - ranked) < top_p
        p = torch.zeros_like(p).scatter(0, order, ranked * keep)
    return (p / p.sum()).log()


@pytest.mark.parametrize("options", [
    {"temp": 1.0}, {"temp": 0.7, "top_k": 5}, {"temp": 1.3, "top_p": 0.6},
    {"temp": 0.9, "top_k": 8, "top_p": 0.8}, {"greedy": True}])  # fmt: skip
def test_each_tokens_logprob_is_its_probability_under_the_sampled_distribution(
    run: Path, options: dict
) -> None:
    model = charlstm.load(run, engine="torch")
    prime = "ROMEO:\n"
    tokens = list(model.generate(prime, length=60, seed=3, logprobs=4, **options))
    assert all(isinstance(t, Token) for t in tokens) and len(tokens) == 60
    text = "".join(t.text for t in tokens)
    assert text == "".join(model.generate(prime, length=60, seed=3, **options))  # same draws
    ids = model.tokenizer.encode(prime + text).astype(np.int64)
    with torch.no_grad():
        logits, _ = model.net.eval()(torch.from_numpy(ids).view(1, -1))  # (1, T, V)
    temp, top_k, top_p = options.get("temp", 0.0), options.get("top_k", 0), options.get("top_p", 1)
    for j, token in enumerate(tokens):
        logp = reference(logits[0, len(prime) - 1 + j], temp, top_k, top_p)
        chosen = int(ids[len(prime) + j])
        assert logp[chosen] > -math.inf  # the token was allowed to be drawn
        assert token.logprob == pytest.approx(float(logp[chosen]), abs=1e-4)
        best = logp.topk(4)
        shown = [(model.tokenizer.piece(int(i)), float(v))
                 for i, v in zip(best.indices, best.values, strict=True) if v > -math.inf]
        assert [p for p, _ in token.top] == [p for p, _ in shown]
        assert [v for _, v in token.top] == pytest.approx([v for _, v in shown], abs=1e-4)
        if options.get("greedy"):
            assert token.text == token.top[0][0]  # greedy takes the likeliest


def test_numpy_and_torch_engines_give_the_same_tokens_and_logprobs(run: Path) -> None:
    got = {}
    for engine in ("numpy", "torch"):
        model = charlstm.load(run, engine=engine)
        assert model.engine == engine
        got[engine] = model.samples(3, "JULIET:", length=40, seed=9, top_p=0.9, logprobs=2)
    for a, b in zip(got["numpy"], got["torch"], strict=True):
        assert [t.text for t in a] == [t.text for t in b]
        assert [t.logprob for t in a] == pytest.approx([t.logprob for t in b], abs=1e-5)
        assert [[p for p, _ in t.top] for t in a] == [[p for p, _ in t.top] for t in b]


def test_samples_with_logprobs_are_the_samples_and_a_stop_text_trims_their_tokens(
    run: Path,
) -> None:
    model = charlstm.load(run)
    free = model.samples(2, "ROMEO:", length=120, seed=4)
    stop = free[0][30:33]  # a text sample 0 holds: it ends there
    plain = model.samples(2, "ROMEO:", length=120, seed=4, stop=stop)
    scored = model.samples(2, "ROMEO:", length=120, seed=4, stop=stop, logprobs=0)
    assert ["".join(t.text for t in s) for s in scored] == plain
    assert plain[0] == free[0][: free[0].index(stop)]
    assert all(t.top == () and t.logprob <= 0 for s in scored for t in s)
    # a token is held while its text may be the start of a stop text, then sent or cut
    log = TokenLog()
    assert log.push(Token(0, "ab", -1.0, ()), "", None) == []  # "ab" held back
    assert log.push(Token(0, "cd", -2.0, ()), "ab", None) == [Token(0, "ab", -1.0, ())]
    assert log.push(Token(0, "ef", -3.0, ()), "c", "stop") == [Token(0, "c", -2.0, ())]


def test_evaluate_per_token_is_one_pass_whose_mean_is_the_loss(run: Path, tmp_path: Path) -> None:
    text = tmp_path / "held.txt"
    text.write_text(PLAY[:300], encoding="utf-8")
    r = CliRunner().invoke(cli, ["evaluate", str(text), "-m", str(run), "--per-token", "-q"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert "".join(row["token"] for row in rows) == PLAY[:300]
    assert rows[0]["logprob"] is None and all(row["logprob"] < 0 for row in rows[1:])
    loss = charlstm.load(run).evaluate(PLAY[:300], streams=1).loss
    assert -np.mean([row["logprob"] for row in rows[1:]]) == pytest.approx(loss, abs=1e-6)
    tops = charlstm.load(run).token_logprobs(PLAY[:50], top=3)
    assert [t.logprob for t in tops[1:]] == pytest.approx([r["logprob"] for r in rows[1:50]])
    assert all(len(t.top) == 3 and t.top[0][1] >= t.logprob - 1e-12 for t in tops[1:])
    bad = CliRunner().invoke(cli, ["evaluate", str(text), "-m", str(run), "--per-token",
                                   "--per-line"])  # fmt: skip
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_sample_json_logprobs_follows_openais_shape(run: Path) -> None:
    args = ["sample", "-m", str(run), "--prime", "ROMEO:", "-n", "30", "--seed", "5", "-q"]
    r = CliRunner().invoke(cli, [*args, "--json", "--logprobs", "3", "-N", "2"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    plain = [json.loads(line) for line in
             CliRunner().invoke(cli, [*args, "--json", "-N", "2"]).stdout.splitlines()]
    assert [line["text"] for line in lines] == [line["text"] for line in plain]
    for line in lines:
        lp = line["logprobs"]
        assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
        assert len(lp["tokens"]) == 30 and line["text"] == "ROMEO:" + "".join(lp["tokens"])
        for token, offset in zip(lp["tokens"], lp["text_offset"], strict=True):
            assert line["text"][offset : offset + len(token)] == token
        for top, logprob in zip(lp["top_logprobs"], lp["token_logprobs"], strict=True):
            assert len(top) == 3 and max(top.values()) >= logprob
            assert list(top.values()) == sorted(top.values(), reverse=True)


RANGE = "--logprobs must be a whole number from 0 to 20"


@pytest.mark.parametrize(("extra", "message"), [
    (["--logprobs", "2"], "--logprobs are shown in JSON: add --json"),
    (["--json", "--logprobs", "21"], RANGE), (["--json", "--logprobs", "-1"], RANGE)])  # fmt: skip
def test_bad_logprobs_are_one_line_and_exit_2(run: Path, extra: list, message: str) -> None:
    r = CliRunner().invoke(cli, ["sample", "-m", str(run), "-n", "5", *extra])
    assert r.exit_code == 2, r.output
    [line] = r.stderr.strip().splitlines()
    assert message in line


def test_the_api_checks_logprobs_once(run: Path) -> None:
    model = charlstm.load(run)
    for bad in (-1, 21, 2.5, True, "3"):
        with pytest.raises(OptionError, match="logprobs must be a whole number"):
            model.generate("RO", length=3, logprobs=bad)
    with pytest.raises(OptionError, match="logprobs"):
        model.session(logprobs=2)


def test_a_subword_models_tokens_add_up_to_its_text(tmp_path: Path) -> None:
    """Byte-level tokens split inside a character: the one that begins it has "" for text and
    the one that ends it the character, so the tokens' texts add up to the text."""
    corpus = tmp_path / "accents.txt"
    corpus.write_text(PLAY + "Caf\u00e9 na\u00efve \u2014 \U0001f339 r\u00f4le.\n" * 40,
                      encoding="utf-8")  # fmt: skip
    charlstm.train([str(corpus)], steps=15, name="sub", checkpoints=tmp_path / "ck",
                   tokenizer="bpe", vocab_size=300, **TINY)  # fmt: skip
    model = charlstm.load(tmp_path / "ck" / "sub")
    plain = model.samples(3, "Caf", length=60, seed=6, temp=1.5)
    scored = model.samples(3, "Caf", length=60, seed=6, temp=1.5, logprobs=2)
    assert ["".join(t.text for t in s) for s in scored] == plain
    assert any(t.text == "" for s in scored for t in s)  # a character split across tokens
    text = "Caf\u00e9 \U0001f339 r\u00f4le.\n"
    read = model.token_logprobs(text, top=2)
    assert "".join(t.text for t in read) == text and len(read) == len(model.encode_text(text).ids)
