"""One generation loop behind every door (#28.5): for every cell, the same seed, prime and
options give the same text from `charlstm sample` (torch and numpy engines, one sample or -N),
Model.generate and Model.samples, Session.reply after feed(prime), and the server's rows
(serve/batching.Engine, driven in process); and the one stop matcher's rules."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import charlstm
from charlstm.cells import CELLS
from charlstm.cli import app
from charlstm.generate.options import check_sampling
from charlstm.generate.stops import StopMatcher
from charlstm.serve.batching import READ_IN_BATCH, Done, Engine, Failed, Job, Text

TEXT = ("ROMEO:\nBut soft, what light through yonder window breaks?\n"
        "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n\n") * 20  # fmt: skip
# Longer than READ_IN_BATCH: the server runs it apart, through the window forward as sample
# does (a short prompt read on the step path may differ in the last bits, batching.py says).
PRIME = "ROMEO:\nBut soft, what light"
OPTIONS = {"length": 60, "temp": 1.2, "top_p": 0.95, "seed": 7}
FLAGS = ["--length", "60", "--temp", "1.2", "--top-p", "0.95", "--seed", "7"]
TINY = {"hidden": 16, "layers": 2, "batch_size": 4, "window": 16, "steps": 4, "threads": 1,
        "precision": "fp32"}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("generation")
    (root / "play.txt").write_text(TEXT, encoding="utf-8")
    for cell in CELLS:
        charlstm.train([str(root / "play.txt")], name=cell, cell=cell,
                       checkpoints=root / "ck", **TINY)  # fmt: skip
    return root / "ck"


def _cli(run: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["sample", "-m", str(run), "--threads", "1", "-q", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def _served(model: charlstm.Model, n: int, stop: tuple[str, ...]) -> list[str]:
    """The texts of a job's n rows from the server's engine, beside another job's rows."""
    texts, done, finished = [""] * n, [0], threading.Event()

    def publish(updates: list) -> None:
        for job, events in updates:
            for event in events:
                assert not isinstance(event, Failed) or job.handle != "ours", event
                if job.handle == "ours" and isinstance(event, Text):
                    texts[event.index] += event.text
                if job.handle == "ours" and isinstance(event, Done):
                    done[0] += 1
        if done[0] == n:
            finished.set()

    engine = Engine({"m": model}, max_batch=8)
    engine.start(publish)
    try:
        other = model.encode_prime("JULIET:")
        cfg = check_sampling(**OPTIONS).cfg
        engine.submit(Job("m", other, cfg, seed=1, n=2))  # rows of another request
        ids = model.encode_prime(PRIME)
        assert len(ids) > READ_IN_BATCH
        engine.submit(Job("m", ids, cfg, seed=7, n=n, stop=stop, handle="ours"))
        assert finished.wait(30)
    finally:
        engine.stop()
    return texts


@pytest.mark.parametrize("cell", list(CELLS))
def test_every_door_gives_the_same_text(runs: Path, cell: str) -> None:
    run = runs / cell
    torch_model = charlstm.load(run, engine="torch")
    numpy_model = charlstm.load(run, engine="numpy")
    free = "".join(numpy_model.generate(PRIME, **OPTIONS))
    assert len(free) == 60
    for stop in ((), (free[20:23],)):  # the stop text may be split across tokens
        want = free[: free.find(stop[0])] if stop else free
        flags = [*FLAGS, *(f for s in stop for f in ("--stop", s))]
        for engine in ("torch", "numpy"):
            assert _cli(run, "--prime", PRIME, "--engine", engine, *flags) == PRIME + want
        for model in (torch_model, numpy_model):
            assert "".join(model.generate(PRIME, stop=stop, **OPTIONS)) == want
            session = model.session(temp=1.2, top_p=0.95, seed=7)
            session.feed(PRIME)
            assert "".join(session.reply(60, stop)) == want
        assert _served(torch_model, 1, stop) == [want]
        # n samples together: every door gives sample i the same text.
        batch = [json.loads(line)["text"] for line in _cli(
            run, "--prime", PRIME, "-N", "3", "--json", "--no-echo-prime", "--engine", "numpy",
            *flags).splitlines()]  # fmt: skip
        assert len(batch) == 3 and len(set(batch)) > 1
        assert numpy_model.samples(3, PRIME, stop=stop, **OPTIONS) == batch
        assert torch_model.samples(3, PRIME, stop=stop, **OPTIONS) == batch
        assert _served(torch_model, 3, stop) == batch


def test_a_session_goes_on_from_everything_it_generated(runs: Path) -> None:
    """A reply cut by its stop text leaves the state after it: feeding the next line reads on
    from the whole text, as one prime of it all would."""
    model = charlstm.load(runs / "lstm", engine="numpy")
    session = model.session(greedy=True)
    session.feed(PRIME)
    free = "".join(model.generate(PRIME, length=40, greedy=True))
    first = "".join(session.reply(40, free[10:12]))
    assert first == free[: free.find(free[10:12])]
    session.feed("\nJULIET:")
    whole = PRIME + free[: free.find(free[10:12]) + 2] + "\nJULIET:"
    assert "".join(session.reply(30)) == "".join(model.generate(whole, length=30, greedy=True))


# ----------------------------------------------------------------------------- stop texts


def _matched(pieces: list[str], stops: tuple[str, ...]) -> tuple[list[str], bool]:
    matcher, sent = StopMatcher(stops), []
    for piece in pieces:
        text, stopped = matcher.push(piece)
        sent.append(text)
        if stopped:
            return sent, True
    return [*sent, matcher.flush()], False


def test_a_stop_text_split_across_tokens_is_found_and_not_sent() -> None:
    sent, stopped = _matched(["ab", "c\n", "\nd"], ("\n\n",))
    assert stopped and "".join(sent) == "abc" and sent == ["ab", "c", ""]


def test_only_a_tail_that_can_still_begin_a_stop_is_held_back() -> None:
    sent, stopped = _matched(["xa", "ay", "aab"], ("aab", "yz"))
    # "xa": "a" may begin "aab"; "aay": only "y" may begin one ("yz"); "yaab": "aab" came.
    assert stopped and sent == ["x", "aa", "y"]
    sent, stopped = _matched(["aaa", "b"], ("aab",))  # overlapping starts of one stop
    assert stopped and "".join(sent) == "a"
    sent, stopped = _matched(["ab", "cd"], ("bce", "cd"))  # the earlier-ending stop wins
    assert stopped and "".join(sent) == "ab"
    sent, stopped = _matched(["no", " stop"], ("zz",))
    assert not stopped and sent == ["no", " stop", ""]
    sent, stopped = _matched(["a", "b"], ("bc",))  # held to the end, then sent
    assert not stopped and "".join(sent) == "ab" and sent[-1] == "b"


def test_a_stop_at_the_very_start_gives_no_text(runs: Path) -> None:
    sent, stopped = _matched(["\n\nabc"], ("\n\n",))
    assert stopped and sent == [""]
    model = charlstm.load(runs / "gru", engine="numpy")
    first = "".join(model.generate(PRIME, length=10, greedy=True))[0]
    assert "".join(model.generate(PRIME, length=10, greedy=True, stop=first)) == ""
    assert model.samples(2, PRIME, length=10, greedy=True, stop=[first]) == ["", ""]
