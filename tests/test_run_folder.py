"""A run folder belongs to one training at a time, and only to its own files: a second process
is refused while the first trains (and the lock dies with its holder, kill -9 too), links
planted in the folder are never written through, and temporary files of killed writers go."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import charlstm
from charlstm.cli import app
from charlstm.formats.checkpoint import load_checkpoint
from charlstm.formats.checks import resolve_checkpoint
from charlstm.formats.run_folder import (
    ITEMS,
    LOCK_FILE,
    MODEL_FILE,
    RUN_FILES,
    RunBusy,
    RunFolder,
    hold_run,
)
from tests.conftest import PLAY
from tests.helpers import start_training, wait_for

runner = CliRunner()
TINY = {"hidden": 16, "layers": 1, "batch_size": 4, "window": 16, "threads": 1, "lr": 1e-2,
        "warmup": 5, "precision": "fp32"}  # fmt: skip
SHAPE = ["--hidden", "16", "--layers", "1", "-b", "4", "-t", "16", "--threads", "1",
         "--precision", "fp32"]  # fmt: skip
TINY_FLAGS = [*SHAPE, "--lr", "1e-2"]


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charlstm: error: "), stderr
    return lines[0]


def test_a_run_in_training_is_refused_to_every_other_process_until_it_dies(tmp_path, monkeypatch):
    (tmp_path / "big.txt").write_text(PLAY * 20)
    (tmp_path / "other.txt").write_text(PLAY.upper() * 20)
    proc, run = start_training(tmp_path, "same", "--eval-every", "5", *TINY_FLAGS)
    try:
        wait_for(run / "last.pt", proc)
        assert proc.poll() is None, "the first training ended too soon"
        tokens = np.load(run / "tokens.npy").copy()
        monkeypatch.chdir(tmp_path)
        for args in (
            ["train", "other.txt", "--name", "same", "--steps", "3", *TINY_FLAGS],
            ["train", "other.txt", "--name", "same", "--steps", "3", "--overwrite", *TINY_FLAGS],
            ["train", "--resume", str(run), "--steps", "3"],
            ["runs", "--delete", "same"],
            ["runs", "--slim", "same"],
        ):
            r = runner.invoke(app, args)
            assert r.exit_code == 1, (args, r.stderr)
            assert "is being trained now" in one_error_line(r.stderr) or (
                "another process is training" in r.stderr), r.stderr  # fmt: skip
        assert np.array_equal(np.load(run / "tokens.npy"), tokens)  # the run's own tokens
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # The OS let go of the lock with the process: the run resumes, on its own tokens.
    step = load_checkpoint(run / "last.pt")["step"]
    r = runner.invoke(app, ["train", "--resume", str(run), "--steps", "3"])
    assert r.exit_code == 0, r.stderr
    assert load_checkpoint(run / "last.pt")["step"] == step + 3
    # The kill -9 may land in a write of model.safetensors: a resume deletes the temporary files
    # of what only training writes, and leaves the model file's for an hour (an export may be
    # writing it now: formats/run_folder.ONLY_TRAINING_WRITES).
    left = [p for p in run.glob(".*.tmp") if not p.name.startswith(f".{MODEL_FILE}.")]
    assert not (run / LOCK_FILE).exists() and not left


def test_the_lock_is_one_holder_at_a_time_and_dies_with_a_killed_process(tmp_path):
    folder = tmp_path / "r"
    held = hold_run(folder, new=True)
    with pytest.raises(RunBusy, match="another process is training"):
        hold_run(folder, new=True)  # a second open file is a second holder, even in-process
    held.release()
    hold_run(folder, new=True).release()
    code = ("import sys, time; from pathlib import Path; "
            "from charlstm.formats.run_folder import hold_run; "
            "hold_run(Path(sys.argv[1]), new=True); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        with pytest.raises(RunBusy):
            hold_run(folder, new=True)
    finally:
        proc.kill()
        proc.wait()
    hold_run(folder, new=True).release()


def test_files_imports_and_locks_without_fcntl(tmp_path):
    """Windows has no fcntl (msvcrt locks there): importing must not fail on it."""
    code = ("import sys; sys.modules['fcntl'] = None; from charlstm import files; "
            "assert files.fcntl is None; lock = files.try_lock(sys.argv[1]); "
            "assert lock is not None; lock.release()")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "l")], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr


def _plant_links(folder: Path, outside: Path, names: tuple[str, ...]) -> dict[Path, bytes | None]:
    """A link in `folder` for each name, to a file outside (None: a link to nothing yet)."""
    folder.mkdir(parents=True, exist_ok=True)
    before: dict[Path, bytes | None] = {}
    for name in names:
        target = outside / f"victim-{name}"
        if name not in ("best.pt", "last.pt"):  # those would make the folder a run
            target.write_bytes(b"precious " + name.encode())
        before[target] = target.read_bytes() if target.exists() else None
        (folder / name).symlink_to(target)
    return before


def _untouched(before: dict[Path, bytes | None]) -> None:
    for target, content in before.items():
        assert (target.read_bytes() if target.exists() else None) == content, target


def test_links_in_a_run_folder_are_replaced_never_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "play.txt").write_text(PLAY)
    run = tmp_path / "ck" / "r"
    before = _plant_links(run, outside, RUN_FILES)
    charlstm.train(str(tmp_path / "play.txt"), name="r", checkpoints=tmp_path / "ck", steps=6,
                   eval_every=3, keep_eval=str(tmp_path / "play.txt"), **TINY)  # fmt: skip
    _untouched(before)
    for name in RUN_FILES:
        if name == ITEMS:  # only an item model writes it: the link is left alone, unread
            continue
        assert not (run / name).is_symlink() and (run / name).is_file(), name
    # A resumed run writes best.pt, last.pt, metrics.jsonl, run.json, model.safetensors.
    written = ("best.pt", "metrics.jsonl", "run.json", "model.safetensors")
    for name in written:
        (run / name).unlink()
    (outside / "again").mkdir()
    before = _plant_links(run, outside / "again", written)
    charlstm.train(resume=run, steps=3, eval_every=3)
    _untouched(before)
    assert not any((run / name).is_symlink() for name in written)


def test_a_resume_does_not_read_through_links(tmp_path):
    (tmp_path / "play.txt").write_text(PLAY)
    run = tmp_path / "ck" / "r"
    charlstm.train(str(tmp_path / "play.txt"), name="r", checkpoints=tmp_path / "ck", steps=3,
                   **TINY)  # fmt: skip
    (tmp_path / "tokens.npy").write_bytes((run / "tokens.npy").read_bytes())
    (run / "tokens.npy").unlink()
    (run / "tokens.npy").symlink_to(tmp_path / "tokens.npy")
    r = runner.invoke(app, ["train", "--resume", str(run), "--steps", "3"])
    assert r.exit_code == 1
    assert "is a symbolic link" in one_error_line(r.stderr)


def test_a_resume_deletes_the_temporary_files_killed_writers_left(tmp_path):
    (tmp_path / "play.txt").write_text(PLAY)
    run = tmp_path / "ck" / "r"
    charlstm.train(str(tmp_path / "play.txt"), name="r", checkpoints=tmp_path / "ck", steps=3,
                   **TINY)  # fmt: skip
    stale = [run / ".last.pt.0123456789ab.tmp", run / ".tokens.npy.a1b2c3d4e5f6.tmp"]
    old_export = run / ".model.safetensors.00112233aabb.tmp"  # `export` may write this one…
    new_export = run / ".model.safetensors.ffeeddccbbaa.tmp"  # …and may be writing it now
    other = run / ".notes.tmp"  # not a charlstm temporary file
    for path in (*stale, old_export, new_export, other):
        path.write_bytes(b"x" * 1000)
    hour_ago = time.time() - 2 * 3600
    os.utime(old_export, (hour_ago, hour_ago))
    charlstm.train(resume=run, steps=2)
    assert not any(p.exists() for p in (*stale, old_export))
    assert new_export.exists() and other.exists()


def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, monkeypatch):
    """It could not be resumed (no last.pt), and would hold tokens.npy for nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "play.txt").write_text(PLAY)
    wild = ["--lr", "1e4", "--clip", "1e9", "--warmup", "1"]
    r = runner.invoke(app, ["train", "play.txt", "--name", "x", "--steps", "100", "--eval-every",
                            "50", *wild, *SHAPE, "--quiet"])  # fmt: skip
    assert r.exit_code == 1 and "no checkpoint was made" in one_error_line(r.stderr)
    assert not (tmp_path / "checkpoints" / "x").exists()


def test_a_run_folder_names_its_files_and_resolves_best_then_last_then_the_model_file(tmp_path):
    run = RunFolder(tmp_path / "r")
    assert {p.name for p in (run.best, run.last, run.model_file, run.metrics, run.tokens,
                             run.keep, run.summary, run.items)} == set(RUN_FILES)  # fmt: skip
    assert run.lock.name == LOCK_FILE and run.name == "r"
    run.path.mkdir()
    assert run.checkpoint() is None and not run.has_checkpoint()
    for path in (run.model_file, run.last, run.best):  # each new one wins over the ones before
        path.write_bytes(b"x")
        assert run.checkpoint() == path == resolve_checkpoint(run.path)
    assert run.has_checkpoint()
    assert RunFolder.of(run.last) == run and RunFolder.of(tmp_path / "r" / "x.pt") is None


@pytest.mark.parametrize("where", ["fsync", "replace", "link"])
def test_a_ctrl_c_while_a_file_is_committed_leaves_no_temporary_file(tmp_path, monkeypatch, where):
    """A second Ctrl-C can land in the commit's fsync, or between a link and its rename: the
    old file stays, whole, and no temporary file is left behind."""
    from charlstm import files

    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    real = {"fsync": os.fsync, "replace": os.replace}

    def interrupted(*args):
        raise KeyboardInterrupt

    if where == "link":
        source = tmp_path / "source"
        source.write_bytes(b"new")
        monkeypatch.setattr(files.os, "replace", interrupted)
        with pytest.raises(KeyboardInterrupt):
            files.link_atomic(source, target)
    else:
        monkeypatch.setattr(files.os, where, interrupted)
        with pytest.raises(KeyboardInterrupt):
            files.write_atomic(target, b"new")
    monkeypatch.setattr(files.os, "fsync", real["fsync"])
    monkeypatch.setattr(files.os, "replace", real["replace"])
    assert target.read_bytes() == b"old"
    assert not list(tmp_path.glob(".*.tmp"))
