"""A good Unix citizen: per-line scores, batched samples, --quiet, contradictory options, write
failures, Ctrl-C twice, kill -9 at any moment, plots, and bad input as one line."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.display.console import sparkline
from charlstm.formats.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.conftest import PLAY
from tests.helpers import start_training, wait_for

runner = CliRunner()
TINY = ["--hidden", "48", "--layers", "1", "-b", "4", "-t", "16", "--threads", "1", "--lr", "1e-2",
        "--warmup", "5"]  # fmt: skip
SMALL = ["--hidden", "16", "--layers", "1", "-b", "4", "-t", "16", "--threads", "1"]


def charlstm(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "charlstm", *args],
        cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One tiny run trained in-process, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("unix")
    (root / "play.txt").write_text(PLAY, encoding="utf-8")
    result = runner.invoke(
        app,
        ["train", str(root / "play.txt"), "--steps", "100", "--eval-every", "25", "--name", "r",
         "--checkpoints", str(root / "checkpoints"), *TINY],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "validation curve" in result.stderr  # the sparkline row of the summary
    return root / "checkpoints" / "r"


# ------------------------------------------------------------------------------ sparkline


def test_sparkline():
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"
    assert sparkline([2.0, 2.0]) == "▁▁"
    assert sparkline([]) == "" and sparkline([float("nan")]) == ""
    assert sparkline([1.0, float("nan"), 0.0]) == "█ ▁"


# ------------------------------------------------------------------------------ evaluate --per-line


def test_per_line_scores_known_lines_lower_than_noise(run_dir, tmp_path):
    rng = random.Random(0)
    letters = sorted({c for c in PLAY if c.islower()})  # letters the model knows, shuffled
    noise = "".join(rng.choice(letters) for _ in range(40))
    lines = ["ROMEO:", "But soft, what light through yonder window breaks?", noise,
             "JULIET:", "O Romeo, Romeo, wherefore art thou Romeo?"]  # fmt: skip
    text = "\n".join(lines) + "\n"
    path = tmp_path / "lines.txt"
    path.write_text(text)
    r = runner.invoke(app, ["evaluate", str(path), "-m", str(run_dir), "--per-line", "-q"])
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["line"] for row in rows] == lines
    # Every character but the first is predicted once; a newline counts in the line it ends.
    assert sum(row["tokens"] for row in rows) == len(text) - 1
    assert rows[1]["tokens"] == len(lines[1]) + 1
    noise = rows[2]["bits_per_char"]
    assert all(row["bits_per_char"] < noise for i, row in enumerate(rows) if i != 2)
    # The per-line sums add up to one sequential evaluation of the whole text.
    whole = runner.invoke(app, ["evaluate", str(path), "-m", str(run_dir), "--streams", "1",
                                "--json", "-q"])  # fmt: skip
    data = json.loads(whole.stdout)
    assert sum(row["nats"] for row in rows) == pytest.approx(data["loss"] * data["tokens"])


# ------------------------------------------------------------------------------ sample -N


def test_num_samples_json_is_one_object_per_sample_and_reproducible(run_dir):
    args = ["sample", "-m", str(run_dir), "--num-samples", "3", "--length", "40", "--seed", "5",
            "--temp", "1.0", "--prime", "ROMEO:", "--json"]  # fmt: skip
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == second.exit_code == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    rows = [json.loads(line) for line in first.stdout.splitlines()]
    assert [r["sample"] for r in rows] == [1, 2, 3] and {r["seed"] for r in rows} == {5}
    assert all(r["text"].startswith("ROMEO:") and len(r["text"]) == 46 for r in rows)
    assert len({r["text"] for r in rows}) == 3  # independent, not copies
    assert "seed 5" in first.stderr


def test_num_samples_plain_output(run_dir):
    args = ["sample", "-m", str(run_dir), "-N", "2", "--length", "30", "--seed", "9", "--prime",
            "JULIET:"]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.stderr
    blocks = r.stdout.split("\n\n--- sample 2 ---\n")
    assert len(blocks) == 2 and blocks[0].startswith("--- sample 1 ---\nJULIET:")
    assert len(blocks[0]) == len("--- sample 1 ---\nJULIET:") + 30
    assert blocks[1].startswith("JULIET:") and len(blocks[1]) == len("JULIET:") + 30 + 1
    # A batch of one is the streamed single sample.
    one = runner.invoke(app, ["sample", "-m", str(run_dir), "--length", "30", "--seed", "9"])
    assert not one.stdout.startswith("---")


# ------------------------------------------------------------------------------ --quiet


def test_quiet_leaves_stderr_empty(run_dir, tmp_path):
    (tmp_path / "play.txt").write_text(PLAY)
    results = [
        runner.invoke(app, ["train", str(tmp_path / "play.txt"), "--steps", "5", "--name", "q",
                            "--checkpoints", str(tmp_path / "ck"), "-q", *SMALL]),
        runner.invoke(app, ["sample", "-m", str(run_dir), "--length", "10", "-q"]),
        runner.invoke(app, ["sample", "-m", str(run_dir), "--length", "10", "-N", "2", "-q"]),
        runner.invoke(app, ["evaluate", str(tmp_path / "play.txt"), "-m", str(run_dir), "-q"]),
        runner.invoke(app, ["evaluate", str(tmp_path / "play.txt"), "-m", str(run_dir), "-q",
                            "--per-line"]),
        runner.invoke(app, ["info", str(run_dir), "-q"]),
    ]  # fmt: skip
    for r in results:
        assert r.exit_code == 0, r.stderr
        assert r.stderr == ""
    assert results[1].stdout  # quiet silences the logs, never the product


# ------------------------------------------------------------------------------ contradictions


@pytest.mark.parametrize(
    "args,flags",
    [
        (["sample", "--greedy", "--temp", "1.5"], "--temp"),
        (["sample", "--greedy", "--top-k", "5"], "--top-k"),
        (["sample", "--greedy", "--top-p", "0.5"], "--top-p"),
        (["train", "--resume", "RUN", "--hidden", "16"], "--hidden"),
        (["train", "--resume", "RUN", "--cell", "gru", "--tie-weights"], "--cell, --tie-weights"),
        (["train", "--resume", "RUN", "--weight-drop", "0.2"], "--weight-drop"),
    ],
)
def test_contradictory_options_are_usage_errors(run_dir, args, flags):
    args = [str(run_dir) if a == "RUN" else a for a in args]
    if args[0] == "sample":
        args += ["-m", str(run_dir)]
    before = load_checkpoint(run_dir / "last.pt")["step"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and r.stdout == ""
    assert flags in one_line(r.stderr)
    assert load_checkpoint(run_dir / "last.pt")["step"] == before


def test_greedy_with_neutral_values_is_fine(run_dir):
    r = runner.invoke(app, ["sample", "-m", str(run_dir), "--greedy", "--temp", "0", "--top-k",
                            "0", "--length", "5"])  # fmt: skip
    assert r.exit_code == 0, r.stderr


# ------------------------------------------------------------------------------ write failures


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_checkpoint_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "model": {"w": torch.ones(2)}}, path)
    monkeypatch.setattr(torch, "save", _no_space)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint({"step": 2, "model": {"w": torch.zeros(2)}}, path)
    assert str(info.value) == f"could not write '{path}': No space left on device"
    assert info.value.code == 1
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


def test_failed_checkpoint_write_through_the_cli(run_dir, tmp_path, monkeypatch):
    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    before = load_checkpoint(run / "last.pt")["step"]
    files = sorted(p.name for p in run.iterdir())
    monkeypatch.setattr(torch, "save", _no_space)
    r = runner.invoke(app, ["train", "--resume", str(run), "--steps", str(before + 5), "-q",
                            "--threads", "1"])  # fmt: skip
    monkeypatch.undo()
    assert r.exit_code == 1 and r.stdout == ""
    line = one_line(r.stderr)
    assert line.startswith(f"charlstm: error: could not write '{run}")
    assert line.endswith(".pt': No space left on device")
    assert load_checkpoint(run / "last.pt")["step"] == before
    assert sorted(p.name for p in run.iterdir()) == files


# ------------------------------------------------------------------------------ signals


def _big_corpus(folder: Path, copies: int) -> Path:
    path = folder / "big.txt"
    path.write_text(PLAY * copies)
    return path


def test_second_ctrl_c_exits_130_without_traceback(tmp_path):
    _big_corpus(tmp_path, 20)
    proc, run = start_training(
        tmp_path,
        "c",
        "--eval-every",
        "1",
        *SMALL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(run / "last.pt", proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err and out == ""
    for name in ("best.pt", "last.pt"):
        if (run / name).exists():
            assert load_checkpoint(run / name)["model"]
    assert not list(run.glob(".*.tmp"))


def test_kill_9_at_any_moment_leaves_loadable_checkpoints(tmp_path):
    """20 runs killed at a random moment (up to 0.5 s after their first checkpoint) while they
    write checkpoints every other step; all that they leave must load."""
    _big_corpus(tmp_path, 4)
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    delays = [rng.uniform(0.0, 0.5) for _ in range(20)]

    def trial(i: int) -> list[Path]:
        proc, run = start_training(tmp_path, f"k{i}", "--eval-every", "2", *SMALL)
        # From the first checkpoint on, a write is under way most of the time.
        wait_for(run / "best.pt", proc, timeout=30)
        time.sleep(delays[i])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return sorted(run.glob("*.pt"))

    with ThreadPoolExecutor(max_workers=2) as pool:
        per_trial = list(pool.map(trial, range(20)))
    assert all(per_trial), f"a run was killed before its first checkpoint (seed {seed})"
    found = [p for paths in per_trial for p in paths]
    for path in found:
        try:
            load_checkpoint(path)
        except CheckpointError as e:  # pragma: no cover - the failure we guard against
            pytest.fail(f"{path} does not load after kill -9 (random seed {seed}): {e}")


# ------------------------------------------------------------------------------ plots


def test_info_plot_draws_the_curves(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "curve.png"
    r = runner.invoke(app, ["info", str(run_dir), "--plot", str(out)])
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert "checkpoint" in r.stdout  # the usual summary still goes to stdout


def test_info_plot_without_matplotlib_says_what_to_install(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    r = runner.invoke(app, ["info", str(run_dir), "--plot", str(tmp_path / "c.png")])
    assert r.exit_code == 1 and r.stdout == ""
    assert "pip install 'charlstm[plot]'" in one_line(r.stderr)


# ------------------------------------------------------------------------------ bad input


def test_binary_and_badly_encoded_corpora(tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"abc\x00\x01\x02" * 50)
    (tmp_path / "latin.txt").write_bytes(b"hello w\xf6rld\n" * 20)
    r = charlstm("train", "blob.bin", "--steps", "1", cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    line = one_line(r.stderr)
    assert "blob.bin" in line and "binary" in line
    r = charlstm("train", "latin.txt", "--steps", "1", cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    line = one_line(r.stderr)
    assert "latin.txt" in line and "byte 7" in line and "--errors replace" in line


def test_corpus_shorter_than_a_validation_split(tmp_path):
    (tmp_path / "five.txt").write_text("abcde")
    r = charlstm("train", "five.txt", "--steps", "2", *SMALL, cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    line = one_line(r.stderr)
    assert "too short for a validation split" in line and "--val-fraction 0" in line
    r = charlstm("train", "five.txt", "--steps", "2", "--val-fraction", "0", "-q", *SMALL,
                 cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0 and r.stderr == ""


def test_absurd_length_is_a_usage_error(tmp_path):
    r = charlstm("sample", "--length", str(10**12), cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert "--length" in one_line(r.stderr)
