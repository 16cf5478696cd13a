"""Word and BPE models end to end: corpus → tokens (split, train, encode, cache) → train →
sample and evaluate from the checkpoint alone, with bits per character comparable across kinds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.data.split import split_ids
from charlstm.data.tokens import MIN_CACHED_CHARS, _split_pieces, tokenize_corpus

from .conftest import PLAY

runner = CliRunner()


def split_text(text: str, val_fraction: float, *, at_line: bool) -> tuple[str, str]:
    """The training head and validation tail of `text`, as the tokenizer cuts them."""
    parts = list(_split_pieces([text], val_fraction, len(text), at_line=at_line))
    return "".join(t for p, t in parts if p == 0), "".join(t for p, t in parts if p == 1)


TINY = ["--hidden", "48", "--layers", "1", "-b", "4", "-t", "16", "--threads", "1", "--lr", "1e-2",
        "--warmup", "5"]  # fmt: skip


def test_char_split_is_the_old_split_and_word_split_is_at_a_line():
    for fraction in (0.1, 0.25):
        head, tail = split_text(PLAY, fraction, at_line=False)
        ids = np.arange(len(PLAY))
        train, val = split_ids(ids, fraction)
        assert (len(head), len(tail)) == (len(train), len(val))
        head, tail = split_text(PLAY, fraction, at_line=True)
        assert head + tail == PLAY and head.endswith("\n")
    assert split_text(PLAY, 0.0, at_line=True) == (PLAY, "")


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_tokenized_corpus_counts_validation_characters_exactly(kind):
    t = tokenize_corpus(PLAY, "fp", kind=kind, vocab_size=None if kind == "char" else 300,
                        min_frequency=None, val_fraction=0.2, cache_dir=None)  # fmt: skip
    _, tail = split_text(PLAY, 0.2, at_line=kind != "char")
    decoded = t.tokenizer.decode(t.val_ids)
    if kind != "word":  # word: out-of-vocabulary words decode to the placeholder
        assert decoded == tail
    first = t.tokenizer.decode(t.val_ids[:1])
    assert t.val_chars == len(tail) - len(first)
    assert t.n_train + len(t.val_ids) == len(t.ids)


def test_second_run_reads_the_cache_and_a_damaged_cache_is_rebuilt(tmp_path):
    text = (PLAY * (MIN_CACHED_CHARS // len(PLAY) + 1))[: MIN_CACHED_CHARS + 10]
    kw = {"kind": "word", "vocab_size": None, "min_frequency": None, "val_fraction": 0.1,
          "cache_dir": tmp_path}  # fmt: skip
    first = tokenize_corpus(text, "abc", **kw)
    again = tokenize_corpus(text, "abc", **kw)
    assert not first.cached and again.cached
    assert np.array_equal(first.ids, again.ids) and first.n_train == again.n_train
    assert first.tokenizer.fingerprint() == again.tokenizer.fingerprint()
    other = tokenize_corpus(text, "abc", **{**kw, "kind": "bpe"})
    assert not other.cached  # the key holds the tokenizer settings, not just the corpus
    expected = np.array(first.ids)  # a copy: the ids are mapped from the file damaged below
    for npy in tmp_path.glob("*.npy"):
        npy.write_bytes(npy.read_bytes()[:100])  # damaged
    rebuilt = tokenize_corpus(text, "abc", **kw)
    assert not rebuilt.cached and np.array_equal(rebuilt.ids, expected)


@pytest.fixture
def word_run(tmp_path, play_file, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    # AdamW: the word preset's SGD at lr 20 is tuned for corpora, not for a 60-step toy.
    result = runner.invoke(app, ["train", str(play_file), "--tokenizer", "word", "--steps", "60",
                                 "--name", "w", "--optimizer", "adamw", *TINY])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "word tokenizer: vocabulary" in result.stderr and "nats/word" in result.stderr
    assert "word model defaults:" in result.stderr and "dropout 0.2" in result.stderr
    assert "optimizer sgd" not in result.stderr  # a flag given wins over the preset
    return tmp_path / "checkpoints" / "w"


def test_word_model_samples_natural_text(word_run):
    out = runner.invoke(app, ["sample", "--seed", "3", "--length", "80", "--prime", "ROMEO:"])
    assert out.exit_code == 0, out.stderr
    text = out.stdout
    assert text.startswith("ROMEO:")
    corpus_words = set(PLAY.split())
    assert set(text.split()) <= corpus_words  # whole words of the corpus, punctuation attached
    assert "  " not in text and " \n" not in text  # single spaces, as in the corpus
    assert "\n" in text.rstrip("\n")  # line breaks kept
    many = runner.invoke(app, ["sample", "--seed", "3", "-N", "2", "--length", "20", "--json"])
    rows = [json.loads(line) for line in many.stdout.splitlines()]
    assert len(rows) == 2 and all("  " not in r["text"] for r in rows)


def test_word_prime_with_an_unknown_word_is_named(word_run):
    bad = runner.invoke(app, ["sample", "--prime", "ROMEO: zebra", "--length", "5"])
    assert bad.exit_code == 1 and "'zebra'" in bad.stderr and "--on-unknown skip" in bad.stderr
    ok = runner.invoke(app, ["sample", "--prime", "ROMEO: zebra", "--length", "5",
                             "--on-unknown", "skip"])  # fmt: skip
    assert ok.exit_code == 0, ok.stderr


def test_word_evaluation_scores_unknown_words_as_the_unknown_token(word_run, tmp_path):
    held = tmp_path / "held.txt"
    held.write_text("ROMEO:\nBut soft, what zebra through yonder window breaks?\n")
    ev = runner.invoke(app, ["evaluate", str(held), "--json"])
    assert ev.exit_code == 0, ev.stderr
    data = json.loads(ev.stdout)
    assert "1 words outside the vocabulary" in ev.stderr
    # ROMEO: \n But soft, what ⁇ through yonder window breaks? \n  → 11 tokens, 10 predicted
    assert data["tokens"] == 10
    assert data["chars"] == len(held.read_text()) - len("ROMEO:")
    assert data["bits_per_char"] == pytest.approx(
        data["loss"] * data["tokens"] / data["chars"] / math.log(2)
    )


def test_word_run_resumes_on_its_own_split(word_run):
    again = runner.invoke(app, ["train", "--resume", str(word_run), "--steps", "70"])
    assert again.exit_code == 0, again.stderr
    assert "resumed at step 60" in again.stderr


def test_bpe_model_trains_samples_and_evaluates(tmp_path, play_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", str(play_file), "--tokenizer", "bpe", "--vocab-size",
                                 "300", "--steps", "40", "--name", "b", *TINY])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    out = runner.invoke(app, ["sample", "--seed", "1", "--length", "30", "--prime", "JULIET:"])
    assert out.exit_code == 0 and out.stdout.startswith("JULIET:")
    ev = runner.invoke(app, ["evaluate", str(play_file), "--json"])
    data = json.loads(ev.stdout)
    assert data["chars"] > data["tokens"]  # subwords: several characters per token
    info = runner.invoke(app, ["info", "--json"])
    assert json.loads(info.stdout)["tokenizer"] == {"kind": "bpe", "vocab_size": 300}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tokenizer", "sentencepiece"], "Invalid value for '--tokenizer'"),
        (["--vocab-size", "100"], "--vocab-size and --min-frequency are for --tokenizer word"),
    ],
)
def test_bad_tokenizer_options(tmp_path, play_file, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", str(play_file), "--steps", "1", *args])
    assert result.exit_code == 2 and message in result.stderr


def test_adaptive_softmax_loss_path_matches_its_full_distribution():
    import torch
    import torch.nn.functional as F

    from charlstm.config import ModelConfig, SampleConfig
    from charlstm.generate.choose import choose, seeded
    from charlstm.generate.torch_engine import TorchStepper
    from charlstm.model.language_model import LanguageModel

    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=300, hidden_size=32, softmax_cutoffs=[50, 150]))
    ids = torch.randint(0, 300, (3, 12))
    targets = torch.randint(0, 300, (3, 12))
    targets[0, :4] = -100  # padding scores 0
    logits, _ = model(ids)
    assert torch.allclose(logits.exp().sum(-1), torch.ones(3, 12), atol=1e-5)  # log-probabilities
    losses, _ = model(ids, None, targets)
    full = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    assert torch.allclose(losses, full, atol=1e-5) and bool((losses[0, :4] == 0).all())
    stepper, rng, out = TorchStepper(model.eval()), seeded(1), []
    logits = stepper.prime(ids[0, :3].numpy())  # sampling reads the adaptive head's log-probs
    for _ in range(5):
        token = choose(logits, SampleConfig(length=5), rng.random(1))
        out.append(int(token[0]))
        logits = stepper.step(token)
    assert all(0 <= t < 300 for t in out)
    with pytest.raises(ValueError, match="tie_weights"):
        ModelConfig(vocab_size=300, softmax_cutoffs=[50], tie_weights=True)
    # Under bf16 autocast (the default on CPUs with bf16 instructions) the head runs in float32:
    # its clusters' outputs are copied into float32 tensors, which mixed dtypes broke.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_losses, _ = model(ids, None, targets)
        bf16_logits, _ = model(ids)
    bf16_losses.sum().backward()
    assert torch.allclose(bf16_losses, full, atol=0.1) and bf16_logits.dtype == torch.float32


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
@pytest.mark.parametrize("cached", [False, True])
def test_tokenizing_in_pieces_equals_tokenizing_the_whole(kind, cached, tmp_path, monkeypatch):
    import charlstm.data.tokens as tokens

    # Pieces cut anywhere, even inside words and at the validation cut; the cache path writes
    # the ids straight to its .npy file as they come.
    monkeypatch.setattr(tokens, "MIN_CACHED_CHARS", 1 if cached else 10**9)
    text = PLAY * 3
    cuts = [0, 1, 7, 500, 501, len(text) // 2, int(len(text) * 0.8) + 3, len(text) - 5, len(text)]
    pieces = [text[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    kw = {"kind": kind, "vocab_size": None if kind == "char" else 300, "min_frequency": None,
          "val_fraction": 0.2}  # fmt: skip
    whole = tokenize_corpus(text, cache_dir=None, **kw)
    parts = tokenize_corpus(pieces, cache_dir=tmp_path / "c" if cached else None, **kw)
    assert parts.tokenizer.fingerprint() == whole.tokenizer.fingerprint()
    assert np.array_equal(np.asarray(parts.ids), whole.ids)
    assert (parts.n_train, parts.val_chars, parts.chars) == (whole.n_train, whole.val_chars,
                                                              len(text))  # fmt: skip
    assert parts.fingerprint == whole.fingerprint  # of the content, however it was cut
    assert (parts.path is not None) == cached
    if cached:
        assert isinstance(parts.ids, np.memmap)
        again = tokenize_corpus(pieces, cache_dir=tmp_path / "c", **kw)
        assert again.cached and np.array_equal(np.asarray(again.ids), whole.ids)


def test_split_in_pieces_looks_for_the_line_end_across_pieces():

    text = "a" * 100 + "b" * 30 + "\n" + "tail\n"
    for step in (1, 3, 17, 1000):
        pieces = [text[i : i + step] for i in range(0, len(text), step)]
        parts = list(_split_pieces(pieces, 0.5, len(text), at_line=True))
        head = "".join(t for p, t in parts if p == 0)
        assert (head, "".join(t for p, t in parts if p == 1)) == split_text(text, 0.5, at_line=True)
        assert head.endswith("\n") and [p for p, _ in parts] == sorted(p for p, _ in parts)


def test_unchanged_files_are_found_in_the_cache_without_reading_them(tmp_path, monkeypatch):
    import os

    import charlstm.data.tokens as tokens
    from charlstm.data.corpus import CorpusStream

    monkeypatch.setattr(tokens, "MIN_CACHED_CHARS", 1)
    f = tmp_path / "a.txt"
    f.write_text(PLAY)
    kw = {"kind": "char", "vocab_size": None, "min_frequency": None, "val_fraction": 0.1,
          "cache_dir": tmp_path / "cache"}  # fmt: skip

    def run(pieces) -> tokens.TokenizedCorpus:
        stream = CorpusStream([str(f)], cache_dir=tmp_path)
        return tokenize_corpus(pieces or stream, signature=stream.signature(), **kw)

    first = run(None)
    assert not first.cached and first.path is not None

    class Unread(list):
        def __iter__(self):
            raise AssertionError("the corpus was read")

    again = run(Unread())
    assert again.cached and np.array_equal(np.asarray(again.ids), np.asarray(first.ids))
    assert again.fingerprint == first.fingerprint
    f.write_text(PLAY.replace("ROMEO", "romeo"))
    os.utime(f, ns=(1, 1))  # a new time: the signature no longer matches
    changed = run(None)
    assert not changed.cached and changed.fingerprint != first.fingerprint


def test_numpy_engine_refuses_an_adaptive_softmax_without_sending_to_export(tmp_path, play_file):
    """An adaptive softmax has no model file: --engine numpy says so and names the engine that
    runs it, rather than pointing at `export`, which refuses it too."""
    where = ["--checkpoints", str(tmp_path / "ck")]
    result = runner.invoke(app, ["train", str(play_file), "--tokenizer", "word", "--softmax",
                                 "adaptive", "--steps", "2", "--name", "a", "--optimizer", "adamw",
                                 *where, *TINY])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    out = runner.invoke(app, ["sample", "-m", str(tmp_path / "ck" / "a"), "--engine", "numpy",
                              "--length", "5", *where])  # fmt: skip
    assert out.exit_code == 1 and out.stdout == ""
    assert "adaptive softmax has no portable form" in out.stderr
    assert "--engine torch" in out.stderr and "export" not in out.stderr
