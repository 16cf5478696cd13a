"""The command line end to end: in-process through CliRunner, and as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.formats.checkpoint import load_checkpoint

from .helpers import start_training, wait_for, wait_for_cpu

runner = CliRunner()
TINY = ["--hidden", "48", "--layers", "1", "-b", "4", "-t", "16", "--threads", "1", "--lr", "1e-2",
        "--warmup", "5"]  # fmt: skip


def charlstm(*args: str, cwd: Path, stdin: str | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "charlstm", *args],
        cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120, **kw,
    )  # fmt: skip


@pytest.fixture
def trained(tmp_path, play_file, monkeypatch) -> Path:
    """A tiny run trained through the CLI in tmp_path; returns the run folder."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", str(play_file), "--steps", "80", "--name", "r", *TINY])
    assert result.exit_code == 0, result.stderr
    return tmp_path / "checkpoints" / "r"


def test_evaluate_with_short_context_and_in_bf16(trained, play_file):
    from charlstm.device import cpu_has_bf16

    full = json.loads(runner.invoke(app, ["evaluate", str(play_file), "--json"]).stdout)
    short = runner.invoke(app, ["evaluate", str(play_file), "--json", "--reset-every", "8"])
    assert short.exit_code == 0, short.stderr
    data = json.loads(short.stdout)
    assert data["tokens"] == full["tokens"] and data["reset_every"] == 8
    assert data["loss"] > full["loss"]  # eight characters of context are worse than all of them
    # The streams reported are those run: a short text gets fewer, each warmed up in full.
    assert full["streams"] == min(64, max(1, full["tokens"] // 256)) < 64
    assert data["streams"] == -(-full["tokens"] // 8)  # the blocks of 8, side by side
    bf16 = runner.invoke(app, ["evaluate", str(play_file), "--json", "--precision", "bf16"])
    if cpu_has_bf16():
        assert bf16.exit_code == 0, bf16.stderr
        # A trained 2×512 model lands within 1e-4 (BENCHMARKS.md); this tiny one within 5e-4.
        assert json.loads(bf16.stdout)["loss"] == pytest.approx(full["loss"], abs=5e-4)
    else:
        assert bf16.exit_code == 1 and "bf16 instructions" in bf16.stderr
    bad = runner.invoke(app, ["evaluate", str(play_file), "--reset-every", "-1"])
    assert bad.exit_code == 2 and "--reset-every must be" in bad.stderr


def test_train_sample_evaluate_info_through_clirunner(trained, play_file):
    assert {"best.pt", "last.pt", "metrics.jsonl", "tokens.npy"} <= {
        p.name for p in trained.iterdir()
    }
    first = runner.invoke(app, ["sample", "--seed", "7", "--length", "60", "--prime", "ROMEO:"])
    second = runner.invoke(app, ["sample", "--seed", "7", "--length", "60", "--prime", "ROMEO:"])
    assert first.exit_code == second.exit_code == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout  # reproducible with a seed
    assert first.stdout.startswith("ROMEO:") and len(first.stdout) == len("ROMEO:") + 60
    assert "seed 7" in first.stderr and "seed" not in first.stdout

    ev = runner.invoke(app, ["evaluate", str(play_file), "--json"])
    assert ev.exit_code == 0, ev.stderr
    data = json.loads(ev.stdout)
    assert data["tokens"] == len(play_file.read_text()) - 1
    assert 0 < data["loss"] < 2.5 and data["bits_per_char"] == pytest.approx(
        data["loss"] / 0.6931, rel=1e-3
    )

    info = runner.invoke(app, ["info", str(trained), "--json"])
    assert info.exit_code == 0
    meta = json.loads(info.stdout)
    assert meta["steps"] == 80 and meta["tokenizer"]["kind"] == "char" and meta["parameters"] > 0


def test_greedy_is_temperature_zero(trained):
    a = runner.invoke(app, ["sample", "--greedy", "--length", "40", "--seed", "1"])
    b = runner.invoke(app, ["sample", "--temp", "0", "--length", "40", "--seed", "2"])
    assert a.exit_code == b.exit_code == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and len(a.stdout) == 40


def test_subprocess_stdout_holds_only_text(trained, tmp_path):
    result = charlstm("sample", "--seed", "3", "--length", "30", "--prime", "JULIET:", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("JULIET:") and len(result.stdout) == len("JULIET:") + 30
    assert "seed 3" in result.stderr
    piped = charlstm("sample", "--seed", "3", "--length", "30", "--prime", "-", cwd=tmp_path,
                     stdin="JULIET:")  # fmt: skip
    assert piped.returncode == 0 and piped.stdout == result.stdout


def test_sample_streams_before_generation_ends(trained, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlstm", "sample", "--length", "3000000", "--seed", "1"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        first = proc.stdout.read(20)
        assert len(first) == 20 and proc.poll() is None  # text arrived while still generating
    finally:
        proc.kill()
        proc.wait()


def test_head_closes_the_pipe_quietly(trained, tmp_path):
    result = subprocess.run(
        f"set -o pipefail; {sys.executable} -m charlstm sample --length 1000000 --seed 1 "
        "| head -c 50",
        shell=True, executable="/bin/bash", cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0  # charlstm's own status too (pipefail), not only head's
    assert len(result.stdout) == 50
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


def test_chinese_text_samples_chinese(tmp_path):
    text = "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n" * 40
    (tmp_path / "poem.txt").write_text(text, encoding="utf-8")
    r = charlstm("train", "poem.txt", "--steps", "60", "--name", "zh", "--lr", "1e-2", *TINY,
                 cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = charlstm("sample", "--length", "40", "--seed", "0", "--temp", "0.5", cwd=tmp_path)
    chinese = [c for c in s.stdout if "\u4e00" <= c <= "\u9fff"]
    assert len(chinese) >= 20


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["train", "nope.txt", "--steps", "1"], 1, "no such file"),
        (["train", "empty.txt", "--steps", "1"], 1, "empty"),
        (["train", "play.txt", "--budget", "soon"], 2, "--budget"),
        (["train", "play.txt", "--hidden", "0"], 2, "--hidden"),
        (["train", "play.txt", "--weight-drop", "1"], 2, "--weight-drop"),
        (["sample"], 1, "no trained model"),
        (["sample", "-m", "missing.pt"], 1, "no checkpoint"),
        # The sample count is checked before the model loads (this one is not there).
        (["sample", "-m", "missing.pt", "-N", "0"], 2, "--num-samples must be between 1 and"),
        (["sample", "-m", "missing.pt", "-N", "99999999"], 2, "10,000, got 99999999"),
        (["sample", "-m", "junk.pt"], 1, "junk.pt"),
        (["evaluate", "play.txt", "-m", "junk.pt"], 1, "junk.pt"),
        (["info", "junk.pt"], 1, "junk.pt"),
    ],
)
def test_bad_input_gives_one_line_and_an_exit_code(tmp_path, play_file, args, code, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "junk.pt").write_bytes(b"\x00not a checkpoint" * 10)
    r = charlstm(*args, cwd=tmp_path)
    assert r.returncode == code, r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_bad_sampling_options(trained, tmp_path):
    for args, message in [
        (["--temp", "-1"], "--temp"),
        (["--temp", "nan"], "--temp"),
        (["--top-p", "0"], "--top-p"),
        (["--top-p", "1.5"], "--top-p"),
        (["--length", "-5"], "--length"),
        (["--prime", "ROMEO ✈"], "'✈'"),
    ]:
        r = charlstm("sample", *args, cwd=tmp_path)
        assert r.returncode in (1, 2) and r.stdout == "", args
        assert message in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr
        assert "Traceback" not in r.stderr


def test_kill_9_keeps_checkpoints_loadable_and_resume_continues(tmp_path, play_file):
    big = tmp_path / "big.txt"
    big.write_text(play_file.read_text() * 20)
    proc, run = start_training(tmp_path, "k", "--eval-every", "20", *TINY)
    wait_for(run / "last.pt", proc)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = load_checkpoint(run / "last.pt")["step"]
    assert step >= 20
    assert load_checkpoint(run / "best.pt")["model"]
    # 20 more steps
    r = charlstm("train", "--resume", str(run), "--steps", "20", "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"resumed at step {step:,}" in r.stderr
    assert load_checkpoint(run / "last.pt")["step"] == step + 20


def test_ctrl_c_saves_last_and_exits_130(tmp_path, play_file):
    big = tmp_path / "big.txt"
    big.write_text(play_file.read_text() * 20)
    proc, run = start_training(
        tmp_path,
        "c",
        "--eval-every",
        "100000",
        *TINY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # tokens.npy is written just before training starts; the first step (oneDNN set-up)
    # took 1.3 s of CPU after it here. Waiting for CPU time, not wall time, keeps that true on
    # a busy machine. No validation runs, so only the Ctrl-C can write last.pt.
    wait_for(run / "tokens.npy", proc)
    wait_for_cpu(proc, 4.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and out == ""
    assert load_checkpoint(run / "last.pt")["step"] > 0


def test_train_from_stdin_and_plain_stderr_in_a_pipe(tmp_path, play_file):
    """`cat … | charlstm train -` trains; stderr that is not a terminal gets no colour codes or
    progress animation, only plain lines (NO_COLOR set as well)."""
    env = {**os.environ, "NO_COLOR": "1"}
    r = charlstm("train", "-", "--steps", "30", "--name", "pipe", *TINY, cwd=tmp_path,
                 stdin=play_file.read_text(), env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "\x1b[" not in r.stderr and "\r" not in r.stderr  # no ANSI codes, no redrawn bar
    assert "step" in r.stderr and "training summary" in r.stderr
    meta = json.loads(charlstm("info", "checkpoints/pipe", "--json", cwd=tmp_path).stdout)
    assert meta["corpus"]["sources"] == ["<stdin>"] and meta["steps"] == 30


def test_per_line_into_head_exits_zero(trained, tmp_path, play_file):
    """More JSON lines than a pipe buffer holds, read by `head -n 1`: status 0, no noise."""
    many = tmp_path / "many.txt"
    many.write_text(play_file.read_text() * 40)  # ~3,800 lines, ~400 KB of JSON
    result = subprocess.run(
        f"set -o pipefail; {sys.executable} -m charlstm evaluate many.txt --per-line | head -n 1",
        shell=True, executable="/bin/bash", cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["line"] == "ROMEO:"
    assert "Traceback" not in result.stderr


def test_plain_progress_lines_fill_only_the_gaps_between_validations():
    """Off a terminal, a progress line appears only where validations leave over 15% of the run
    unreported, so a log shows life during a long run without doubling every validation line."""
    import io

    from rich.console import Console

    from charlstm.display.training import TrainDisplay

    def lines(eval_at: set[int]) -> list[str]:
        out = io.StringIO()
        display = TrainDisplay(Console(file=out, width=200))
        for step in range(1, 101):  # one progress event per 1% of the run
            p = step / 100
            display("progress", {"step": step, "loss": 2.0, "tokens_per_s": 1e4, "progress": p,
                                 "elapsed": float(step)})  # fmt: skip
            if step in eval_at:
                display("eval", {"step": step, "elapsed": float(step), "train_loss": 2.0,
                                 "val_loss": 2.1, "val_bpc": 3.0, "best": True})  # fmt: skip
        return out.getvalue().splitlines()

    every_decile = lines({10, 20, 30, 40, 50, 60, 70, 80, 90, 100})
    assert len(every_decile) == 10 and all("val 2.1000" in line for line in every_decile)
    sparse = lines({10, 100})  # validation is costly: the first decile and the end only
    progress = [line for line in sparse if "tok/s" in line]
    assert [int(line.split()[1]) for line in progress] == [25, 40, 55, 70, 85]
    assert len(sparse) == 7 and "val" in sparse[-1]
