"""Fine-tuning (--init-from): the base's weights and tokenizer carried to new text, a char
vocabulary grown without moving the old predictions, forgetting made visible, exact resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import charlstm
from charlstm.cli import app
from charlstm.formats.checkpoint import load_checkpoint, read_checkpoint, weights_fingerprint
from charlstm.model.language_model import with_vocabulary
from charlstm.training.loop import TrainingDiverged
from tests.conftest import PLAY

runner = CliRunner()
SMALL = {"batch_size": 4, "window": 16, "threads": 1, "precision": "fp32"}
NEW = "Café au lait, résumé naïve: 1,234 crêpes.\n" * 40  # é, ï, ê, digits... are new


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A char base trained on the play, and the new text beside it."""
    root = tmp_path_factory.mktemp("ft")
    (root / "play.txt").write_text(PLAY)
    (root / "new.txt").write_text(NEW)
    charlstm.train(str(root / "play.txt"), steps=60, name="base", checkpoints=root / "ck",
                   hidden=32, layers=2, lr=1e-2, warmup=5, **SMALL)  # fmt: skip
    return root


def test_a_grown_vocabulary_leaves_the_old_predictions_where_they_were(home):
    base = read_checkpoint(home / "ck" / "base" / "best.pt")
    old = base.model()
    grown = with_vocabulary(old, base.config.vocab_size + 7).eval()
    ids = torch.from_numpy(base.tokenizer.encode(PLAY[:300]).astype("int64"))[None]
    with torch.no_grad():
        before = old(ids)[0].softmax(-1)
        after = grown(ids)[0].softmax(-1)
    torch.testing.assert_close(after[..., : base.config.vocab_size], before, rtol=0, atol=1e-6)
    assert after[..., base.config.vocab_size :].sum(-1).max() < 1e-6  # new tokens start rare


def test_fine_tuning_carries_the_base_to_new_text_and_says_what_it_added(home):
    events: list[tuple[str, dict]] = []
    summary = charlstm.train(
        str(home / "new.txt"), init_from=home / "ck" / "base", steps=40, eval_every=20,
        name="ft", checkpoints=home / "ck", keep_eval=str(home / "play.txt"),
        report=lambda e, d: events.append((e, d)), **SMALL,
    )  # fmt: skip
    said = " ".join(d.get("text", "") for e, d in events if e == "message")
    assert "added 10 characters the base never saw: 'Céïv1234ê.'" in said
    assert "the budget sizing does not apply" in said
    ft = read_checkpoint(home / "ck" / "ft" / "best.pt")
    base = read_checkpoint(home / "ck" / "base" / "best.pt")
    assert ft.config.hidden_size == base.config.hidden_size == 32
    assert ft.tokenizer.chars.startswith(base.tokenizer.chars)  # the old ids are kept
    parent = ft.data["parent"]
    assert parent["path"].endswith("base/best.pt") and parent["fingerprint"] == (
        weights_fingerprint(base.data))  # fmt: skip
    metrics = [json.loads(line) for line in (home / "ck" / "ft" / "metrics.jsonl").open()]
    assert all(m["keep_loss"] > 0 and m["keep_bpc"] > 0 for m in metrics)  # forgetting shows
    assert summary["val_losses"][-1] < summary["val_losses"][0]
    shown = runner.invoke(app, ["info", str(home / "ck" / "ft")])
    assert "fine-tuned   from" in shown.stdout
    plot = runner.invoke(app, ["info", str(home / "ck" / "ft"), "--plot", str(home / "c.png")])
    assert plot.exit_code == 0 and (home / "c.png").stat().st_size > 1000


def test_a_fine_tune_run_resumes_exactly(home):
    common = {"init_from": home / "ck" / "base", "steps": 40, "eval_every": 10,
              "checkpoints": home / "ck", "dropout": 0.2, **SMALL}  # fmt: skip
    charlstm.train(str(home / "new.txt"), name="whole", **common)
    polls = iter(range(1000))
    charlstm.train(str(home / "new.txt"), name="cut", should_stop=lambda: next(polls) >= 23,
                   **common)  # fmt: skip
    assert load_checkpoint(home / "ck" / "cut" / "last.pt")["step"] == 23
    charlstm.train(resume=home / "ck" / "cut", threads=1, precision="fp32")
    whole = load_checkpoint(home / "ck" / "whole" / "last.pt")
    cut = load_checkpoint(home / "ck" / "cut" / "last.pt")
    assert cut["step"] == 40 and cut["parent"] == whole["parent"]
    for a, b in zip(whole["metrics"][-2:], cut["metrics"][-2:], strict=True):
        assert a["step"] == b["step"] and a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    for key, value in whole["model"].items():
        assert torch.allclose(cut["model"][key], value, atol=1e-5), key


@pytest.mark.parametrize("flags", [["--hidden", "64"], ["--tokenizer", "word"], ["--cell", "gru"],
                                   ["--resume", "x"]])  # fmt: skip
def test_the_shape_comes_from_the_base_and_resume_is_another_thing(home, flags):
    r = runner.invoke(app, ["train", str(home / "new.txt"), "--init-from",
                            str(home / "ck" / "base"), "--steps", "1", *flags])  # fmt: skip
    assert r.exit_code == 2 and r.stdout == ""
    line = r.stderr.strip()
    assert flags[0] in line and "\n" not in line, line


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_a_word_or_bpe_base_keeps_its_tokenizer(home, tmp_path, kind):
    extra = {"vocab_size": 300} if kind == "bpe" else {}
    charlstm.train(str(home / "play.txt"), tokenizer=kind, steps=10, name=kind,
                   checkpoints=tmp_path, hidden=16, **extra, **SMALL)  # fmt: skip
    events: list[tuple[str, dict]] = []
    charlstm.train(str(home / "new.txt"), init_from=tmp_path / kind, steps=10, name="ft",
                   checkpoints=tmp_path, report=lambda e, d: events.append((e, d)),
                   **SMALL)  # fmt: skip
    said = " ".join(d.get("text", "") for e, d in events if e == "message")
    base = read_checkpoint(tmp_path / kind / "best.pt")
    ft = read_checkpoint(tmp_path / "ft" / "best.pt")
    assert ft.tokenizer.to_dict() == base.tokenizer.to_dict()
    if kind == "word":
        assert "of the new text's words are outside the base's vocabulary" in said
    else:
        assert "tokens per character" in said
    sample = charlstm.load(tmp_path / "ft").generate("Caf", length=5, seed=1, on_unknown="skip")
    assert "".join(sample)


LATIN, GREEK = "abcdefghijklmnopqrstuvwxyz", "αβψδεφγηιξκλμνοπκρστθωςχυζ"
IN_GREEK = str.maketrans(LATIN + LATIN.upper(), GREEK + GREEK.upper())


def test_fine_tuning_onto_a_new_alphabet_learns_it(home):
    """The play in Greek letters: nearly every character is new to the base, so the first loss
    (~20 nats: new characters start rare) is far above an absolute explosion threshold."""
    greek = home / "greek.txt"
    greek.write_text(PLAY.translate(IN_GREEK))
    summary = charlstm.train(
        str(greek), init_from=home / "ck" / "base", steps=150, eval_every=50, lr=1e-2,
        name="greek", checkpoints=home / "ck", **SMALL,
    )  # fmt: skip
    ft = load_checkpoint(home / "ck" / "greek" / "best.pt")
    start = ft["train_curve"][0]["train_loss"]  # the first steps'
    assert start > 3 * math.log(ft["model_config"]["vocab_size"]) > 10  # the old threshold
    assert summary["val_losses"][-1] < 3.5, summary["val_losses"]  # learned it
    text = "".join(charlstm.load(home / "ck" / "greek").generate(length=300, seed=1))
    assert sum(c in GREEK + GREEK.upper() for c in text) > 100, text


def test_a_fine_tune_that_fails_before_its_first_checkpoint_leaves_no_folder(home):
    greek = home / "greek-nan.txt"
    greek.write_text(PLAY.translate(IN_GREEK))
    with pytest.raises(TrainingDiverged, match="no checkpoint was made"):
        charlstm.train(str(greek), init_from=home / "ck" / "base", steps=50, eval_every=40,
                       lr=1e4, warmup=1, clip=1e9, name="nan", checkpoints=home / "ck",
                       **SMALL)  # fmt: skip
    assert not (home / "ck" / "nan").exists()
