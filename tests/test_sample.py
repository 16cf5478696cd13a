import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlstm.config import SampleConfig
from charlstm.data.tokenizer import CharTokenizer
from charlstm.generate.choose import ModelOutputError, choose, seeded
from charlstm.generate.loop import Request, generate
from charlstm.generate.torch_engine import Stepper, TorchStepper
from charlstm.model.language_model import LanguageModel, ModelConfig


def _model(cell: str = "lstm") -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(ModelConfig(vocab_size=11, cell=cell, hidden_size=16, num_layers=2)).eval()


def _sampled(model: LanguageModel, prime: torch.Tensor, cfg: SampleConfig, seed: int) -> list:
    """The ids the generation loop picks (a char vocabulary of the model's size decodes them)."""
    tok = CharTokenizer("abcdefghijk")
    req = Request(prime.numpy(), cfg, seed)
    return [tok.chars.index(c) for _, t in generate(TorchStepper(model), tok, req) for c in t]


def test_temperature_zero_is_argmax():
    logits = np.random.default_rng(0).normal(size=(5, 11))
    u = np.full(5, 0.5)
    assert np.array_equal(choose(logits, SampleConfig(temperature=0), u), logits.argmax(-1))
    tiny = SampleConfig(temperature=1e-308)  # so low that logits / T overflows: greedy too
    assert np.array_equal(choose(logits, tiny, u), logits.argmax(-1))


def test_top_k_and_top_p_restrict_the_choice():
    logits = np.tile([[4.0, 3.0, 0.0, -1.0, -2.0]], (200, 1))
    g = seeded(0)

    def picked(**cfg) -> set[int]:
        return set(choose(logits, SampleConfig(temperature=1.0, **cfg), g.random(200)).tolist())

    assert picked(top_k=2) == {0, 1}
    # p(0) ≈ 0.71, p(1) ≈ 0.26: top-p 0.5 keeps only token 0, 0.9 keeps tokens 0 and 1.
    assert picked(top_p=0.5) == {0}
    assert picked(top_p=0.9) == {0, 1}
    assert picked(top_k=3) == {0, 1, 2}


def test_a_draw_picks_the_token_whose_cumulative_probability_it_falls_in():
    probs = np.array([[0.1, 0.2, 0.3, 0.4]])
    cfg = SampleConfig(temperature=1.0)
    for u, token in ((0.0, 0), (0.0999, 0), (0.1001, 1), (0.5999, 2), (0.6001, 3), (0.9999, 3)):
        assert choose(np.log(probs), cfg, np.array([u])).tolist() == [token], u
    with pytest.raises(ModelOutputError):
        choose(np.array([[0.0, np.nan]]), cfg, np.array([0.5]))


def test_same_seed_same_sample():
    model = _model()
    prime = torch.tensor([1, 2, 3])

    def run(seed):
        return _sampled(model, prime, SampleConfig(length=50), seed)

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_stepwise_generation_matches_the_training_model():
    """Each step's distribution equals a full forward pass over the whole prefix (to 1e-5)."""
    for cell in ("lstm", "gru", "rnn", "peephole", "coupled"):
        model = _model(cell)
        prime = torch.tensor([1, 2, 3, 4])
        greedy = SampleConfig(length=12, temperature=0)
        tokens = _sampled(model, prime, greedy, 0)
        seq = torch.tensor([prime.tolist() + tokens])
        with torch.no_grad():
            logits, _ = model(seq)
        # Greedy choices must be the argmax of the full-prefix logits at each position.
        expected = logits[0, len(prime) - 1 : -1].argmax(-1).tolist()
        assert tokens == expected, cell

        # And the probabilities themselves agree with the fast path's.
        with torch.inference_mode():
            _, state = model(seq[:, :-1])
            stepper = Stepper(model)
            stepper.start(state)
            fast = F.softmax(stepper.step(seq[:, -1]), -1)
        assert torch.allclose(fast, F.softmax(logits[:, -1], -1), atol=1e-5), cell


def test_fused_lstm_step_gives_the_training_models_probabilities():
    """The sampler's fused step (one multiply per layer, state in place) against a full forward
    pass over each prefix, for several streams and steps, to 1e-5."""
    torch.manual_seed(3)
    model = LanguageModel(ModelConfig(vocab_size=13, hidden_size=24, num_layers=3)).eval()
    seq = torch.randint(0, 13, (4, 20))
    with torch.no_grad():
        full, _ = model(seq)  # (4, 20, 13)
        _, state = model(seq[:, :5])
    fused = Stepper(model)
    fused.start(state)
    for t in range(5, 20):
        logits = fused.step(seq[:, t])
        assert torch.allclose(F.softmax(logits, -1), F.softmax(full[:, t], -1), atol=1e-5), t


# ------------------------------------------------------------------------- valid UTF-8 only

ASCII_TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 30
GREEK_TEXT = "ΡΩΜΑΙΟΣ: Αλλά σιγά, τι φως από το παράθυρο εκεί; 世界你好\n\n" * 30


def _bpe_run(tmp_path, text: str, name: str):
    from typer.testing import CliRunner

    import charlstm
    from charlstm.cli import app

    (tmp_path / f"{name}.txt").write_text(text, encoding="utf-8")
    r = CliRunner().invoke(app, ["train", str(tmp_path / f"{name}.txt"), "--tokenizer", "bpe",
                                 "--vocab-size", "300", "--steps", "5", "--name", name,
                                 "--checkpoints", str(tmp_path / "ck"), "--hidden", "16",
                                 "--layers", "1", "-b", "4", "-t", "16", "--threads", "1",
                                 "-q"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return charlstm.load(tmp_path / "ck" / name, engine="torch"), tmp_path / "ck" / name


def test_a_bpe_model_of_ascii_text_samples_only_valid_text(tmp_path):
    """A byte-level vocabulary holds every byte; a model that saw only ASCII, sampled wildly,
    must still write valid UTF-8 (no U+FFFD), by every door: torch, numpy, a batch, a session."""
    import charlstm

    model, run = _bpe_run(tmp_path, ASCII_TEXT, "ascii")
    numpy = charlstm.load(run, engine="numpy")
    texts = []
    for seed in range(6):
        for net in (model, numpy):
            texts.append("".join(net.generate("ROMEO", length=300, temp=3.0, seed=seed)))
        texts += model.samples(4, "ROMEO", length=200, temp=3.0, seed=seed)
        session = model.session(temp=3.0, seed=seed)
        session.feed("ROMEO: ")
        texts += ["".join(session.reply(50)) for _ in range(3)]
    assert sum(map(len, texts)) > 10_000
    for text in texts:
        assert "\ufffd" not in text and text.encode("utf-8").decode("utf-8") == text
        assert text.isascii()  # bytes it never saw are not written either


def test_a_bpe_model_of_greek_and_chinese_still_samples_their_characters(tmp_path):
    model, _ = _bpe_run(tmp_path, GREEK_TEXT, "greek")
    text = "".join("".join(model.generate("Α", length=300, temp=1.5, seed=s)) for s in range(3))
    assert "\ufffd" not in text
    multi = {ch for ch in text if len(ch.encode("utf-8")) > 1}
    assert len(multi & set(GREEK_TEXT)) >= 10, multi


def test_the_utf8_mask_allows_only_what_continues_valid_text():
    from charlstm.generate.choose import Utf8Rows, Utf8Table, unfinished, utf8_so_far

    tokens = [bytes([b]) for b in range(256)] + ["é".encode(), b"\xe4\xb8", b"\xad x"]
    rows = Utf8Rows(Utf8Table(tokens), batch=2)
    start = rows.allowed()[0]
    assert start[ord("a")] and start[0xE4] and start[256] and not start[0x80] and not start[0xFF]
    rows.push(np.array([257, ord("a")]))  # row 0: E4 B8 begun; row 1: done
    both = rows.allowed()
    assert both.shape == (2, len(tokens)) and both[0, 258] and not both[0, ord("a")]
    assert not both[1, 258] and both[1, ord("a")]
    assert unfinished("a中".encode()[:-1]) == "中".encode()[:-1] and unfinished(b"ab") == b""
    assert not utf8_so_far(b"\xed\xa0") and utf8_so_far(b"\xf0\x9f") and not utf8_so_far(b"\xc0")
    # choose never picks what the mask leaves out, greedy or not.
    logits = np.zeros((1, len(tokens)))
    logits[0, 0x80] = 50.0
    for cfg in (SampleConfig(temperature=0), SampleConfig(temperature=5.0)):
        assert choose(logits, cfg, np.array([0.3]), start[None])[0] != 0x80
