"""The Python API as a notebook user meets it: train, load, generate, evaluate, resume; errors
as exceptions, nothing printed."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest

import charlstm
from charlstm import CharlstmError
from charlstm.config import ConfigError

from .conftest import PLAY

TINY = {"hidden": 32, "layers": 1, "batch_size": 4, "window": 16, "lr": 1e-2, "warmup": 5,
        "threads": 1, "precision": "fp32"}  # fmt: skip


@pytest.fixture
def run_dir(tmp_path: Path, play_file: Path) -> Path:
    events: list[str] = []
    summary = charlstm.train(
        [str(play_file)], steps=60, name="api", checkpoints=tmp_path / "ck",
        report=lambda event, data: events.append(event), **TINY,
    )  # fmt: skip
    assert summary["steps"] == 60 and summary["best_val_loss"] < math.log(summary["parameters"])
    assert {"tokenized", "start", "eval"} <= set(events)
    return Path(summary["run_dir"])


def test_train_load_generate_evaluate(run_dir: Path, capsys) -> None:
    model = charlstm.load(run_dir)
    assert model.path == run_dir / "best.pt" and model.tokenizer.kind == "char"
    first = "".join(model.generate("ROMEO:", length=80, seed=7))
    again = "".join(model.generate("ROMEO:", length=80, seed=7))
    other = "".join(model.generate("ROMEO:", length=80, seed=8))
    assert first == again and first != other and len(first) == 80
    greedy = "".join(model.generate("JULIET:", length=40, greedy=True))
    assert greedy == "".join(model.generate("JULIET:", length=40, temp=0))
    batch = model.samples(3, "ROMEO:", length=30, seed=1)
    assert (
        len(batch) == 3
        and all(len(s) == 30 for s in batch)
        and batch == model.samples(3, "ROMEO:", length=30, seed=1)
    )

    result = model.evaluate(PLAY)
    assert result.tokens == len(PLAY) - 1 and result.chars == len(PLAY) - 1
    assert result.loss < math.log(model.config.vocab_size)  # it learnt something
    assert result.bits_per_char == pytest.approx(result.loss / math.log(2))
    one_pass = model.evaluate(PLAY, streams=1)
    assert one_pass.loss == pytest.approx(result.loss, abs=1e-3)
    lines = model.score_lines("ROMEO:\nBut soft\n")
    assert [row["line"] for row in lines] == ["ROMEO:", "But soft"]

    info = charlstm.info(run_dir)
    assert info["steps"] == 60 and info["tokenizer"]["kind"] == "char"
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # the library never prints


def test_resume_continues_the_run(run_dir: Path) -> None:
    resumed: list[int] = []

    def report(event: str, data: dict) -> None:
        if event == "start":
            resumed.append(data["resumed_at"])

    summary = charlstm.train(resume=run_dir, steps=20, threads=1, report=report)  # 20 more
    assert resumed == [60] and summary["steps"] == 80
    assert charlstm.info(run_dir / "last.pt")["steps"] == 80


def test_stop_request_saves_last_and_returns(tmp_path: Path, play_file: Path) -> None:
    polls = iter(range(10_000))
    summary = charlstm.train(
        str(play_file), steps=500, name="stop", checkpoints=str(tmp_path),  # a str folder too
        should_stop=lambda: next(polls) >= 12, **TINY,
    )  # fmt: skip
    assert summary["stop_reason"] == "interrupted" and summary["steps"] < 500
    assert charlstm.info(tmp_path / "stop" / "last.pt")["steps"] == summary["steps"]


def test_errors_are_exceptions_with_exit_codes(tmp_path: Path, play_file: Path, run_dir) -> None:
    with pytest.raises(CharlstmError, match="no checkpoint") as e:
        charlstm.load(tmp_path / "missing.pt")
    assert e.value.code == 1
    with pytest.raises(ConfigError, match="^hidden must") as e:
        charlstm.train(str(play_file), hidden=0)
    assert e.value.code == 2
    model = charlstm.load(run_dir)
    with pytest.raises(CharlstmError, match="'✈'"):
        model.generate("ROMEO ✈")
    with pytest.raises(CharlstmError, match="^top_p must"):
        model.generate(top_p=0)


def test_api_errors_name_keywords_and_take_none_for_no_stop(run_dir: Path) -> None:
    """The API's messages name its keyword arguments, the CLI's the flags: one message each."""
    model = charlstm.load(run_dir)
    with pytest.raises(CharlstmError) as e:
        model.generate("ROMEO ✈")
    assert str(e.value).endswith('pass on_unknown="skip"') and "--" not in str(e.value)
    assert e.value.for_cli().endswith("pass --on-unknown skip")
    for call, name in ((lambda: model.samples(0), "n must"), (lambda: model.generate(seed=-1),
                       "seed must"), (lambda: model.generate("ROMEO:", adapt=-1), "adapt must"),
                       (lambda: model.generate(stop=[""]), "stop needs")):  # fmt: skip
        with pytest.raises(CharlstmError, match=f"^{name}"):
            call()
    session = model.session(seed=1)
    assert "".join(session.reply(20, None)) == "".join(model.session(seed=1).reply(20))
    for bad in ((20, 5), ("20", None), (-1, None), (20, [None])):
        with pytest.raises(CharlstmError, match="^(stop|length) must"):
            session.reply(*bad)
    assert list(model.generate("ROMEO:", length=5, seed=1, stop=None))
    with pytest.raises(CharlstmError, match="^prime must be a text"):
        model.generate(42)


def test_train_logs_progress_for_library_users(tmp_path: Path, play_file: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="charlstm"):
        charlstm.train(str(play_file), steps=20, name="log", checkpoints=tmp_path, **TINY)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("charlstm")]
    assert any("parameters" in line for line in said), said  # the start
    assert any(line.startswith("step 20") for line in said), said  # the end, with its loss


def test_importing_charlstm_imports_no_torch() -> None:
    code = "import sys, charlstm, charlstm.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
