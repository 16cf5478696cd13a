"""Beam search (#29.5, generate/beam.py): the K most likely continuations, with their
log-probabilities, on either engine and every cell; checked against greedy sampling, the
model's own scores, and an exhaustive search where the beam holds every text."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import charlstm
from charlstm.cells import CELLS
from charlstm.cli import app
from charlstm.config import MAX_BEAM
from charlstm.data.tokenizer import CharTokenizer
from charlstm.generate.beam import Beam, beam_search

TEXT = ("ROMEO:\nBut soft, what light through yonder window breaks?\n"
        "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n\n") * 20  # fmt: skip
GREEK = "ΡΩΜΑΙΟΣ: Αλλά σιγά, τι φως από το παράθυρο εκεί; 世界你好\n\n" * 30
PRIME = "ROMEO:\nBut"
TINY = {"hidden": 16, "layers": 2, "batch_size": 4, "window": 16, "steps": 6, "threads": 1,
        "precision": "fp32"}  # fmt: skip
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny char model of every cell, a word model, a bpe model of Greek and Chinese, and a
    char model of a three-letter alphabet."""
    root = tmp_path_factory.mktemp("beam")
    (root / "play.txt").write_text(TEXT, encoding="utf-8")
    (root / "greek.txt").write_text(GREEK, encoding="utf-8")
    (root / "abc.txt").write_text("ab\nba\naab\nbba\n" * 40, encoding="utf-8")
    ck = root / "ck"
    for cell in CELLS:
        charlstm.train([str(root / "play.txt")], name=cell, cell=cell, checkpoints=ck, **TINY)
    charlstm.train([str(root / "greek.txt")], name="bpe", tokenizer="bpe", vocab_size=300,
                   checkpoints=ck, **TINY)  # fmt: skip
    charlstm.train([str(root / "play.txt")], name="word", tokenizer="word", checkpoints=ck,
                   **TINY)  # fmt: skip
    charlstm.train([str(root / "abc.txt")], name="abc", checkpoints=ck,
                   **{**TINY, "hidden": 8, "steps": 20})  # fmt: skip
    return ck


def _scorer(model: charlstm.Model):
    """The model's own log-probability of `ids` after the prime: torch's full forward pass
    over the whole text, in float64 (a path the beam search does not take)."""
    net = copy.deepcopy(model.net).double().eval()

    def score(prime: str | None, ids: tuple[int, ...]) -> float:
        prime_ids = model.encode_prime(prime)
        x = torch.from_numpy(np.array([*prime_ids, *ids], dtype=np.int64))[None]
        with torch.no_grad():
            logits, _ = net(x)
        lp = torch.log_softmax(logits[0].double(), -1)
        start = len(prime_ids) - 1
        return float(sum(lp[start + i, t] for i, t in enumerate(ids)))

    return score


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["sample", "--threads", "1", "-q", *args])
    return result.exit_code, result.stdout, result.stderr


def test_one_beam_is_greedy_sampling(runs: Path) -> None:
    for run in (runs / "lstm", runs / "bpe", runs / "word"):
        prime = "Α" if run.name == "bpe" else PRIME
        for engine in ("numpy", "torch"):
            model = charlstm.load(run, engine=engine)
            greedy = "".join(model.generate(prime, length=40, greedy=True))
            [best] = model.beam(prime, 1, 40)
            assert best.text == greedy and best.tokens == 40 and best.reason == "length"
            code, out, _ = _cli("-m", str(run), "--prime", prime, "-n", "40", "--greedy",
                                "--engine", engine)  # fmt: skip
            assert code == 0 and out == prime + greedy
            code, out, _ = _cli("-m", str(run), "--prime", prime, "-n", "40", "--beam", "1",
                                "--json", "--engine", engine)  # fmt: skip
            assert code == 0 and json.loads(out)["text"] == prime + greedy


def test_each_beams_log_probability_is_the_models_own_score(runs: Path) -> None:
    for run, prime in ((runs / "lstm", PRIME), (runs / "gru", None), (runs / "bpe", "Α"),
                       (runs / "word", PRIME)):
        model = charlstm.load(run, engine="numpy")
        score = _scorer(model)
        beams = model.beam(prime, 6, 12)
        assert len(beams) == 6
        for beam in beams:
            assert beam.logprob == pytest.approx(score(prime, beam.ids), abs=1e-5)
            assert beam.text == "".join(map(model.tokenizer.piece, beam.ids))


@pytest.mark.parametrize("length", [3, 4])
def test_a_beam_that_holds_every_text_finds_the_true_best_k(runs: Path, length: int) -> None:
    """A 3-token vocabulary: with K ≥ 3^length the beam is the exhaustive search."""
    model = charlstm.load(runs / "abc", engine="numpy")
    vocab = model.tokenizer.vocab_size
    assert vocab == 3
    score = _scorer(model)
    every = sorted(((score("a", ids), ids) for ids in itertools.product(range(vocab),
                    repeat=length)), key=lambda s: -s[0])  # fmt: skip
    k = min(vocab**length + 2, MAX_BEAM)
    beams = model.beam("a", k, length)
    assert len(beams) == vocab**length  # every text, each once
    assert [b.logprob for b in beams] == pytest.approx([s for s, _ in every], abs=1e-5)
    for beam in beams:
        assert beam.logprob == pytest.approx(score("a", beam.ids), abs=1e-5)
    top = model.beam("a", vocab**length, length)
    assert [b.ids for b in top] == [b.ids for b in beams]  # the same search
    assert {b.ids for b in beams} == {ids for _, ids in every}


def test_with_a_stop_text_every_text_that_can_end_is_ranked_truly(runs: Path) -> None:
    """Texts end at a newline (the stop) or at 4 tokens: 15 end at the stop, 16 run to the
    length; a beam of 40 holds them all, in the model's own order."""
    model = charlstm.load(runs / "abc", engine="torch")
    score, newline = _scorer(model), int(model.tokenizer.encode("\n")[0])
    ends = [ids for n in range(1, 5) for ids in itertools.product(range(3), repeat=n)
            if newline not in ids[:-1] and (ids[-1] == newline or n == 4)]  # fmt: skip
    assert len(ends) == 31
    truth = sorted(score("b", ids) for ids in ends)[::-1]
    beams = model.beam("b", 40, 4, stop="\n")
    assert {b.ids for b in beams} == set(ends) and len(beams) == 31
    assert [b.logprob for b in beams] == pytest.approx(truth, abs=1e-5)  # in order
    for b in beams:  # (the order of two texts within 1e-6 of each other is float32's)
        assert b.logprob == pytest.approx(score("b", b.ids), abs=1e-5)
        assert b.reason == ("stop" if b.ids[-1] == newline else "length")
        assert "\n" not in b.text


def test_beams_are_sorted_distinct_and_the_same_every_time(runs: Path) -> None:
    model = charlstm.load(runs / "lstm", engine="numpy")
    beams = model.beam(PRIME, 8, 30)
    assert len(beams) == 8 and len({b.ids for b in beams}) == 8
    assert all(a.logprob >= b.logprob for a, b in itertools.pairwise(beams))
    assert model.beam(PRIME, 8, 30) == beams
    assert charlstm.load(runs / "lstm", engine="numpy").beam(PRIME, 8, 30) == beams
    assert model.beam(PRIME, 8, 0) == [Beam("", 0.0, (), "length")]


class _Table:
    """A Stepper over three tokens whose next-token log-probabilities depend only on the last
    token: row t of `table` (3, 3). Its state is each row's last token."""

    vocab_size = 3

    def __init__(self, table: np.ndarray) -> None:
        self.table = np.asarray(table, np.float32)

    def prime(self, ids: np.ndarray, state: object = None) -> np.ndarray:
        self.last = np.asarray(ids[-1:], dtype=np.int64)
        return self.table[self.last]

    def state(self) -> tuple[np.ndarray]:
        return (self.last[None, :, None].copy(),)

    def pick(self, state: tuple[np.ndarray], index: list[int]) -> tuple[np.ndarray]:
        return (state[0][:, index],)

    def start(self, state: tuple[np.ndarray]) -> None:
        self.last = state[0][0, :, 0].copy()

    def step(self, tokens: np.ndarray) -> np.ndarray:
        assert len(tokens) == len(self.last), "a token for each row of the state"
        self.last = tokens.copy()
        return self.table[tokens]


def _search(table: np.ndarray, k: int, length: int, stop: tuple[str, ...] = ()) -> list:
    """(text, tokens, reason, logprob) of each beam, over the tokens a, b, c."""
    beams = beam_search(_Table(table), CharTokenizer("abc"), np.array([0]), k, length, stop)  # type: ignore[arg-type]
    return [(b.text, b.tokens, b.reason, pytest.approx(b.logprob)) for b in beams]


def test_ties_go_to_the_better_row_then_the_lower_token_id() -> None:
    third = np.log(1 / 3)
    assert _search(np.zeros((3, 3)), 4, 3) == [
        ("aaa", 3, "length", 3 * third), ("aab", 3, "length", 3 * third),
        ("aac", 3, "length", 3 * third), ("aba", 3, "length", 3 * third)]  # fmt: skip
    assert _search(np.zeros((3, 3)), 2, 3, ("b",)) == [("", 1, "stop", third),
                                                        ("a", 2, "stop", 2 * third)]  # fmt: skip


def test_finished_hypotheses_are_kept_aside_and_the_rest_search_on() -> None:
    """After a: a 0.6, b 0.1, c 0.3 (c stops); after b or c: any. Step 1 keeps a and b live
    and c finished; step 2 keeps aa only (ac finishes, and every b… is behind it); step 3
    ends with aaa ahead of everything left."""
    table = np.log([[0.6, 0.1, 0.3], [1 / 3] * 3, [1 / 3] * 3])
    want = [("", 1, "stop", np.log(0.3)), ("aaa", 3, "length", 3 * np.log(0.6))]
    assert _search(table, 2, 3, ("c",)) == want


@pytest.mark.parametrize("cell", list(CELLS))
def test_numpy_and_torch_give_the_same_beams(runs: Path, cell: str) -> None:
    numpy = charlstm.load(runs / cell, engine="numpy").beam(PRIME, 5, 20, stop="\n")
    torch_ = charlstm.load(runs / cell, engine="torch").beam(PRIME, 5, 20, stop="\n")
    assert [b.text for b in numpy] == [b.text for b in torch_]
    assert [b.logprob for b in numpy] == pytest.approx([b.logprob for b in torch_], abs=1e-4)


def test_a_stop_text_ends_a_hypothesis(runs: Path) -> None:
    model = charlstm.load(runs / "lstm", engine="numpy")
    score = _scorer(model)
    greedy = "".join(model.generate(PRIME, length=40, greedy=True))
    for stop in (greedy[3], greedy[5:7]):  # one character, and two (split across tokens)
        want = greedy[: greedy.find(stop)]
        [best] = model.beam(PRIME, 1, 40, stop=stop)
        assert best.text == want and best.reason == "stop"
        assert model.tokenizer.decode(best.ids) == want + stop
        beams = model.beam(PRIME, 6, 40, stop=[stop, "zz"])
        for beam in beams:
            assert stop not in beam.text
            assert beam.logprob == pytest.approx(score(PRIME, beam.ids), abs=1e-5)
            if beam.reason == "stop":  # its tokens wrote the text, then the stop text
                assert model.tokenizer.decode(beam.ids) == beam.text + stop
            else:
                assert beam.tokens == 40
        assert sum(b.reason == "stop" for b in beams) >= 1


def test_a_bpe_models_beams_are_valid_text(runs: Path) -> None:
    model = charlstm.load(runs / "bpe", engine="torch")
    for beam in model.beam("Α", 10, 30):
        assert "\ufffd" not in beam.text
        assert beam.text.encode("utf-8").decode("utf-8") == beam.text


def test_the_command_prints_each_beam_whole_under_its_line(runs: Path) -> None:
    run = str(runs / "lstm")
    beams = charlstm.load(run, engine="numpy").beam(PRIME, 3, 25, stop="\n\n")
    code, out, _ = _cli("-m", run, "--prime", PRIME, "-n", "25", "--beam", "3", "--stop",
                        "\n\n")  # fmt: skip
    assert code == 0
    blocks = [f"--- beam {i} · log-prob {b.logprob:.3f} ---\n{PRIME}{b.text}"
              for i, b in enumerate(beams, 1)]  # fmt: skip
    assert out == "\n\n".join(blocks) + "\n"
    code, out, _ = _cli("-m", run, "--prime", PRIME, "-n", "25", "--beam", "3", "--stop",
                        "\n\n", "--json", "--no-echo-prime")  # fmt: skip
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"beam": i, "logprob": b.logprob, "tokens": b.tokens, "text": b.text}
        for i, b in enumerate(beams, 1)]  # fmt: skip


@pytest.mark.parametrize("flags", [["--temp", "1"], ["--top-k", "3"], ["--top-p", "0.5"],
                                   ["--seed", "1"], ["-N", "2"], ["--adapt", "1"],
                                   ["--greedy"], ["--beam", "0"],
                                   ["--beam", str(MAX_BEAM + 1)]])  # fmt: skip
def test_beam_search_refuses_what_it_cannot_do(runs: Path, flags: list[str]) -> None:
    code, out, err = _cli("-m", str(runs / "lstm"), "--prime", "RO", "--beam", "2", *flags)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("charlstm: error: --beam ")
    model = charlstm.load(runs / "lstm", engine="numpy")
    for k in (0, MAX_BEAM + 1, 2.5, True):
        with pytest.raises(charlstm.errors.OptionError, match="^k must be a whole number"):
            model.beam("RO", k, 5)  # type: ignore[arg-type]


def test_beam_search_on_the_numpy_engine_never_imports_torch(runs: Path) -> None:
    script = (f"import sys; from charlstm.cli import app\n"
              f"try:\n    app(['sample', '-m', {str(runs / 'lstm')!r}, '--beam', '3', '-n', "
              f"'10', '--engine', 'numpy', '-q'])\n"
              f"except SystemExit as e:\n    assert not e.code, e.code\n"
              f"assert 'torch' not in sys.modules")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("--- beam ") == 3
