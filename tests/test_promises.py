"""The README's promises, under attack: exact resume after SIGINT and kill -9 with dropout and
weight-drop, damaged and crafted checkpoints (a fuzz test), races on the token cache, resume
options, run names, every cell in every precision, closed pipes."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.config import CELLS
from charlstm.device import cpu_has_bf16
from charlstm.formats.checkpoint import load_checkpoint
from charlstm.training.loop import fit
from tests.conftest import PLAY
from tests.helpers import tiny_run, wait_for

runner = CliRunner()
TINY = ["--hidden", "32", "--layers", "2", "-b", "4", "-t", "16", "--threads", "1", "--lr",
        "1e-2", "--warmup", "5", "--seed", "3", "--precision", "fp32"]  # fmt: skip


def charlstm(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "charlstm", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=180, **kw)  # fmt: skip


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charlstm: error: "), stderr
    return lines[0]


# ----------------------------------------------------------------------------- exact resume


def _curve(run: Path) -> list[tuple[int, float, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    return [(m["step"], m["train_loss"], m["val_loss"]) for m in rows]


@pytest.mark.parametrize("regulariser", [["--dropout", "0.3"], ["--weight-drop", "0.3"],
                                         ["--dropout", "0.3", "--precision", "bf16"]])
def test_resume_after_sigint_or_kill_9_continues_the_uninterrupted_curve(tmp_path, regulariser):
    """Interrupted anywhere by a real signal and resumed with no options, a run with random
    masks ends where the uninterrupted run ends, every later validation equal to 1e-5 and the
    weights bit for bit, in bf16 too where the CPU has it."""
    if "bf16" in regulariser and not cpu_has_bf16():
        pytest.skip("this CPU has no bf16")
    (tmp_path / "big.txt").write_text(PLAY * 20)
    common = ["big.txt", "--steps", "600", "--eval-every", "20", *TINY, *regulariser, "-q"]
    whole = charlstm("train", *common, "--name", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    expected = _curve(tmp_path / "checkpoints" / "whole")
    final = load_checkpoint(tmp_path / "checkpoints" / "whole" / "last.pt")["model"]

    for sig, code in ((signal.SIGINT, 130), (signal.SIGKILL, -9)):
        name = f"cut{int(sig)}"
        proc = subprocess.Popen([sys.executable, "-m", "charlstm", "train", *common, "--name",
                                 name], cwd=tmp_path, stderr=subprocess.DEVNULL)  # fmt: skip
        run = tmp_path / "checkpoints" / name
        wait_for(run / "last.pt", proc)
        time.sleep(random.uniform(0.05, 0.5))  # somewhere mid-run
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code
        cut_at = load_checkpoint(run / "last.pt")["step"]
        assert 0 < cut_at < 600
        resumed = charlstm("train", "--resume", str(run), "-q", "--threads", "1", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        got = {step: (t, v) for step, t, v in _curve(run)}
        later = [(s, t, v) for s, t, v in expected if s > cut_at]
        assert later and got[600]
        for step, train_loss, val_loss in later:
            assert got[step][0] == pytest.approx(train_loss, abs=1e-5), (sig, step)
            assert got[step][1] == pytest.approx(val_loss, abs=1e-5), (sig, step)
        weights = load_checkpoint(run / "last.pt")["model"]
        for key, value in final.items():
            assert torch.equal(weights[key], value), (sig, key)


# ----------------------------------------------------------------------------- resume options


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    (root / "play.txt").write_text(PLAY)
    r = runner.invoke(app, ["train", str(root / "play.txt"), "--steps", "30", "--name", "f",
                            "--checkpoints", str(root / "ck"), *TINY, "-q"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return root / "ck" / "f"


def _copy(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / run.name
    shutil.copytree(run, dest)
    return dest


def test_resume_limits_mean_that_much_more_and_a_finished_run_is_no_silent_no_op(
    finished, tmp_path
):
    run = _copy(finished, tmp_path)
    done = runner.invoke(app, ["train", "--resume", str(run), "--threads", "1"])
    assert done.exit_code == 2 and "reached its limit" in one_error_line(done.stderr)
    more = runner.invoke(app, ["train", "--resume", str(run), "--steps", "5", "--threads", "1",
                               "--json"])  # fmt: skip
    assert more.exit_code == 0, more.stderr
    assert json.loads(more.stdout)["steps"] == 35 and "training 5 more steps" in more.stderr
    longer = runner.invoke(app, ["train", "--resume", str(run), "--budget", "2s", "--threads",
                                 "1", "--json"])  # fmt: skip
    assert longer.exit_code == 0, longer.stderr
    assert json.loads(longer.stdout)["steps"] > 35 and "2s more" in longer.stderr


def test_a_budget_bounds_validation_its_summary_adds_up_and_a_finished_budget_is_refused(
    tmp_path, monkeypatch
):
    """--budget covers every validation (the split is cut to what fits, recorded as the run's
    --val-tokens), the summary's parts add up to its total (after --resume too), a run that
    finished its budget is refused on --resume without new limits, and info says it resumes."""
    from charlstm import api
    from charlstm.training import run as training

    # A validation may take only a sliver of this budget: the split must be cut.
    monkeypatch.setattr(training, "VALIDATION_SHARE", 1e-4)
    (tmp_path / "big.txt").write_text(PLAY * 20)
    opts = dict(hidden=16, layers=1, lr=1e-2, dropout=0.0, batch_size=4, window=16, threads=1,
                precision="fp32", val_fraction=0.5, checkpoints=tmp_path / "ck")  # fmt: skip
    notes = []
    first = api.train([str(tmp_path / "big.txt")], budget=4, name="b", **opts,
                      report=lambda e, d: notes.append(d.get("message", "")))  # fmt: skip
    run = tmp_path / "ck" / "b"
    full = len(PLAY * 20) // 2
    ckpt = load_checkpoint(run / "last.pt")
    cut = ckpt["train_config"]["val_tokens"]
    assert 0 < cut < full and first["val_tokens_scored"] == cut - 1
    assert any("validating on the first" in n for n in notes)
    for summary in (first,):
        parts = summary["time_parts"]
        assert set(parts) >= {"setup", "training", "validating", "final_validation", "saving"}
        assert sum(parts.values()) == pytest.approx(summary["total_seconds"], abs=0.01)
        assert summary["total_seconds"] < 4 + 20  # generous: a busy machine
    # Finished its budget: refused without new limits, resumed with them.
    done = runner.invoke(app, ["train", "--resume", str(run), "--threads", "1"])
    assert done.exit_code == 2 and "reached its limit" in one_error_line(done.stderr)
    info = json.loads(runner.invoke(app, ["info", str(run), "--json"]).stdout)
    assert info["resumable"] is True and info["path"].endswith("best.pt")
    more = api.train(resume=run, budget=2, threads=1)
    parts = more["time_parts"]
    assert sum(parts.values()) == pytest.approx(more["total_seconds"], abs=0.01)
    assert more["elapsed"] > parts["training"] + parts["validating"]  # all sessions
    assert load_checkpoint(run / "last.pt")["train_config"]["val_tokens"] == cut  # same part
    shutil.copy(run / "best.pt", tmp_path / "alone.pt")
    assert json.loads(runner.invoke(app, ["info", str(tmp_path / "alone.pt"), "--json"]
                                    ).stdout)["resumable"] is False  # fmt: skip


def test_resume_applies_what_may_change_and_refuses_what_may_not(finished, tmp_path):
    run = _copy(finished, tmp_path)
    r = runner.invoke(app, ["train", "--resume", str(run), "--steps", "3", "--lr", "0.004",
                            "--clip", "0.5", "--patience", "2", "--threads", "1"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "--lr 0.004 (was 0.01)" in r.stderr and "--clip 0.5 (was 1)" in r.stderr
    saved = load_checkpoint(run / "last.pt")["train_config"]
    assert (saved["lr"], saved["clip"], saved["patience"], saved["steps"]) == (0.004, 0.5, 2, 33)
    for flags, named in [(["--seed", "4"], "--seed"), (["-b", "8"], "--batch-size"),
                         (["--dropout", "0.1"], "--dropout"), (["-t", "8"], "--window"),
                         (["--optimizer", "sgd"], "--optimizer"),
                         (["--val-fraction", "0.2"], "--val-fraction")]:  # fmt: skip
        bad = runner.invoke(app, ["train", "--resume", str(run), "--steps", "1", *flags])
        assert bad.exit_code == 2 and named in one_error_line(bad.stderr), flags


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "/tmp/x", "a\\b"])
def test_run_names_stay_inside_the_checkpoints_folder(tmp_path, play_file, name):
    r = runner.invoke(app, ["train", str(play_file), "--steps", "1", "--name", name,
                            "--checkpoints", str(tmp_path / "ck")])  # fmt: skip
    assert r.exit_code == 2 and "--name" in one_error_line(r.stderr)
    assert not (tmp_path / "x").exists() and not Path("/tmp/x/last.pt").exists()


# ----------------------------------------------------------------------------- damaged files


def _paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    """Every place in a checkpoint: dict keys and list items, nested (long lists: the first 3)."""
    found = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            found += _paths(v, (*prefix, i))
    return found


def _mutated(value: object, how: str) -> object:
    """A damaged version of `value`; `_DELETE` deletes it."""
    if isinstance(value, torch.Tensor) and value.numel():
        t = value.clone()
        if how == "nan" and t.is_floating_point():
            t.view(-1)[0] = math.nan
            return t
        if how == "inf" and t.is_floating_point():
            t.view(-1)[-1] = math.inf
            return t
        if how == "dtype":
            return t.to(torch.int64)
        if how == "shape":
            return (
                t.reshape(1) if t.dim() == 0 else t.reshape(-1)[1:] if t.dim() == 1 else t[..., :-1]
            )
        if how == "bigger":
            return torch.cat([t.reshape(-1), t.reshape(-1)]) if t.dim() == 0 else torch.cat([t, t])
    if isinstance(value, str) and how == "truncate":
        return value[: len(value) // 2]
    if isinstance(value, str) and how == "list":
        return list(value[:50])
    return {"delete": _DELETE, "none": None, "text": "x", "negative": -1, "zero": 0,
            "huge": 10**12, "float": 2.5, "nan": math.nan, "inf": math.inf, "list": [1, "a"],
            "dict": {"a": 1}, "dtype": True, "shape": [3], "bigger": 10**6,
            "truncate": "", }[how]  # fmt: skip


_DELETE = object()
HOWS = ("delete", "none", "text", "negative", "zero", "huge", "float", "nan", "inf", "list",
        "dict", "dtype", "shape", "bigger", "truncate")  # fmt: skip


def _apply(ckpt: dict, path: tuple, how: str) -> dict:
    out = copy.deepcopy(ckpt)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    new = _mutated(parent[path[-1]], how)
    if new is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return out


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("fuzz")
    (home / "play.txt").write_text(PLAY)
    r = runner.invoke(app, ["train", str(home / "play.txt"), "--steps", "12", "--eval-every",
                            "6", "--name", "r", "--checkpoints", str(home / "ck"), "--hidden",
                            "8", "--layers", "1", "-b", "2", "-t", "8", "--threads", "1",
                            "--dropout", "0", "-q"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return home


ONE = ["-q", "--threads", "1"]  # one thread: a busy machine must not slow the fuzzing tenfold
# fmt: off
COMMANDS = {
    "info": lambda f, h: ["info", str(f), "-q"],
    "sample": lambda f, h: ["sample", "-m", str(f), "--length", "4", "--seed", "1", *ONE],
    "evaluate": lambda f, h: ["evaluate", str(h / "play.txt"), "-m", str(f), "--streams", "2",
                              *ONE],
    "visualize": lambda f, h: ["visualize", str(h / "play.txt"), "-m", str(f), "--max-chars",
                               "12", *ONE],
    "resume": lambda f, h: ["train", "--resume", str(f.parent), "--steps", "1", *ONE],
}
# fmt: on
CASES_PER_COMMAND = 110  # × 5 commands: 550 damaged checkpoints


def _timeout(signum, frame):
    raise TimeoutError("a command hung on a damaged checkpoint")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_damaged_checkpoints_give_one_line_never_a_traceback(fuzz_home, tmp_path, command):
    source = fuzz_home / "ck" / "r" / "last.pt"
    pristine = load_checkpoint(source)
    run = tmp_path / "run"
    shutil.copytree(source.parent, run)
    target = run / "last.pt" if command == "resume" else tmp_path / "damaged.pt"
    paths = _paths(pristine)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes: dict[int, int] = {}

    @settings(max_examples=CASES_PER_COMMAND, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(path=st.sampled_from(paths), how=st.sampled_from(HOWS))
    def case(path: tuple, how: str) -> None:
        torch.save(_apply(pristine, path, how), target)
        previous = signal.signal(signal.SIGALRM, _timeout)
        signal.alarm(30)
        try:
            r = runner.invoke(app, COMMANDS[command](target, fuzz_home))
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        assert r.exception is None or isinstance(r.exception, SystemExit), (
            path, how, repr(r.exception))  # fmt: skip
        assert r.exit_code in (0, 1, 2), (path, how, r.exit_code)
        if r.exit_code:
            one_error_line(r.stderr)
        outcomes[r.exit_code] = outcomes.get(r.exit_code, 0) + 1

    case()
    assert sum(outcomes.values()) == CASES_PER_COMMAND and outcomes.get(1, 0) > 20, outcomes
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before  # KiB
    assert grown < 300 * 1024, f"peak memory grew by {grown // 1024} MiB"


def test_crafted_checkpoints_from_the_issue_are_refused_in_one_line(fuzz_home, tmp_path):
    good = load_checkpoint(fuzz_home / "ck" / "r" / "best.pt")
    crafted = {
        "only the format": {"format": "charlstm", "format_version": 1},
        "chars as a list": {**good, "tokenizer": {"kind": "char",
                                                  "chars": list(good["tokenizer"]["chars"])}},
        "more symbols than the model": {**good, "tokenizer": {
            "kind": "char", "chars": good["tokenizer"]["chars"] + "¤€"}},
        "a 10^12-parameter model": {**good, "model_config": {**good["model_config"],
                                                             "hidden_size": 10**6}},
        "NaN weight": _apply(good, ("model", "head.weight"), "nan"),
        "config of None": {**good, "model_config": None},
        "weight of None": _apply(good, ("model", "head.bias"), "none"),
        "step of another type": {**good, "step": "12"},
        "a metrics record with a newline": {**good, "metrics": ["a\nb"]},
    }  # fmt: skip
    for what, ckpt in crafted.items():
        path = tmp_path / "crafted.pt"
        torch.save(ckpt, path)
        for command in ("info", "sample"):
            r = runner.invoke(app, COMMANDS[command](path, fuzz_home))
            assert r.exit_code == 1, (what, command, r.stdout, r.stderr, r.exception)
            line = one_error_line(r.stderr)
            if what == "NaN weight":
                assert "NaN" in line, line
            if what.startswith("a 10^12"):
                assert "parameters" in line and "this machine has" in line, line


def test_a_saved_checkpoint_passes_the_validator(fuzz_home):
    from charlstm.formats.checkpoint import read_checkpoint

    for name in ("best.pt", "last.pt"):
        checked = read_checkpoint(fuzz_home / "ck" / "r" / name, resume=name == "last.pt")
        assert checked.model().cfg.hidden_size == 8


# ----------------------------------------------------------------------------- the token cache


def _tokens_in(cache: Path) -> list[Path]:
    return sorted(p for p in cache.glob("*.npy"))


def test_two_first_runs_at_once_both_succeed_and_leave_one_cache_entry(tmp_path):
    (tmp_path / "big.txt").write_text(PLAY * 450)  # ~1.2 MB: over the caching threshold
    small = ["--steps", "1", "--hidden", "8", "--layers", "1", "-b", "2", "-t", "8", "--threads",
             "1", "--val-fraction", "0.001", "-q"]  # fmt: skip
    cache = tmp_path / "corpora" / "cache"
    for trial in range(10):
        shutil.rmtree(cache, ignore_errors=True)
        procs = [subprocess.Popen([sys.executable, "-m", "charlstm", "train", "big.txt",
                                   "--name", f"{who}{trial}", *small], cwd=tmp_path,
                                  stderr=subprocess.PIPE, text=True)
                 for who in "ab"]  # fmt: skip
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        entries = _tokens_in(cache)
        assert len(entries) == 1, entries
        assert not list(cache.glob(".*.tmp"))
        cached = np.load(entries[0])
        for who in "ab":
            ran = np.load(tmp_path / "checkpoints" / f"{who}{trial}" / "tokens.npy")
            assert np.array_equal(ran, cached)


_TOKENIZE = """
import sys
from pathlib import Path
from charlstm.data.corpus import CorpusStream
from charlstm.data.tokens import tokenize_corpus
stream = CorpusStream([sys.argv[1]], cache_dir=Path(sys.argv[2]))
tokenize_corpus(stream, kind="char", vocab_size=None, min_frequency=None, val_fraction=0.1,
                cache_dir=Path(sys.argv[2]) / "cache", signature=stream.signature())
"""


def test_kill_9_while_tokenizing_never_leaves_a_cache_entry_a_later_run_trusts(tmp_path):
    from charlstm.data.corpus import CorpusStream
    from charlstm.data.tokens import tokenize_corpus

    corpus = tmp_path / "big.txt"
    corpus.write_text(PLAY * 4000)  # ~10 MB: tokenizing takes a good part of a second
    reference = tokenize_corpus(
        PLAY * 4000, kind="char", vocab_size=None, min_frequency=None, val_fraction=0.1,
        cache_dir=None,
    )  # fmt: skip
    rng = random.Random(7)
    root = tmp_path / "corpora"
    for _ in range(20):
        shutil.rmtree(root, ignore_errors=True)
        proc = subprocess.Popen([sys.executable, "-c", _TOKENIZE, str(corpus), str(root)])
        time.sleep(rng.uniform(0.15, 0.9))
        proc.kill()
        proc.wait()
        stream = CorpusStream([str(corpus)], cache_dir=root)
        again = tokenize_corpus(stream, kind="char", vocab_size=None, min_frequency=None,
                                val_fraction=0.1, cache_dir=root / "cache",
                                signature=stream.signature())  # fmt: skip
        assert np.array_equal(np.asarray(again.ids), reference.ids)
        assert again.n_train == reference.n_train and again.val_chars == reference.val_chars


# ------------------------------------------------------------- every cell, every precision


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_trains_in_every_precision_the_machine_offers(tmp_path, cell, precision):
    if precision == "bf16" and not cpu_has_bf16():
        r = runner.invoke(app, ["train", "x", "--precision", "bf16", "--steps", "1"])
        assert r.exit_code != 0 and "bf16" in r.stderr
        return
    run = tiny_run(PLAY, tmp_path, hidden=16, steps=40, eval_every=20, cell=cell)
    run.precision = precision
    summary = fit(run)
    losses = [m["val_loss"] for m in run.metrics]
    assert summary["steps"] == 40 and all(map(math.isfinite, losses)) and losses[-1] < losses[0]


# ----------------------------------------------------------------------------- closed pipes


def test_every_command_exits_0_on_a_closed_pipe(fuzz_home):
    model = fuzz_home / "ck" / "r"
    many = fuzz_home / "many.txt"
    many.write_text(PLAY * 10)  # output beyond a pipe's 64 KB buffer: head really closes it
    for args in (["sample", "--length", "200000"], ["evaluate", str(many), "--per-line"],
                 ["visualize", str(many), "--max-chars", "26000"], ["info"],
                 ["evaluate", str(many), "--json"]):  # fmt: skip
        cmd = [sys.executable, "-m", "charlstm", *args, "-m" if args[0] != "info" else "",
               str(model)]  # fmt: skip
        shell = " ".join(f"'{a}'" for a in cmd if a) + " | head -c 1 > /dev/null"
        env = {**os.environ, "FORCE_COLOR": "1"}  # visualize's colours make its output long
        r = subprocess.run(["bash", "-c", "set -o pipefail; " + shell], capture_output=True,
                           text=True, timeout=120, env=env)  # fmt: skip
        assert r.returncode == 0, (args, r.stderr)
        assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, args
