"""A new user's first day: each rough edge they hit, with the test that would have caught it.
(Resuming to train longer: tests/test_promises.py::test_resume_limits_mean_that_much_more...)"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.main import get_command
from typer.testing import CliRunner

import charlstm
from charlstm import device
from charlstm.cli import app
from charlstm.device import set_threads
from tests.conftest import PLAY

runner = CliRunner()
TINY = ["--hidden", "16", "--layers", "1", "-b", "4", "-t", "16", "--threads", "1", "--lr",
        "1e-2", "--warmup", "5", "-q"]  # fmt: skip


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charlstm: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A folder with a play and a tiny char run under ./ck, shared by the tests that read it."""
    root = tmp_path_factory.mktemp("day")
    (root / "play.txt").write_text(PLAY)
    r = runner.invoke(app, ["train", str(root / "play.txt"), "--steps", "40", "--name", "r",
                            "--checkpoints", str(root / "ck"), *TINY])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return root


# ----------------------------------------------------------------------------- defects


def test_a_word_models_prime_may_start_with_a_word_seen_only_after_a_space(tmp_path):
    (tmp_path / "play.txt").write_text(PLAY)
    r = runner.invoke(app, ["train", str(tmp_path / "play.txt"), "--tokenizer", "word",
                            "--steps", "10", "--name", "w", "--checkpoints", str(tmp_path / "ck"),
                            "--hidden", "16", "--threads", "1", "-q"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    # "soft," occurs only as " soft," (after "But"): the first word of a prime must still match.
    ok = runner.invoke(app, ["sample", "-m", str(tmp_path / "ck" / "w"), "--prime",
                             "soft, what light", "--length", "5", "--seed", "1"])  # fmt: skip
    assert ok.exit_code == 0, ok.stderr
    assert ok.stdout.startswith("soft, what light")


def test_huge_seeds_and_models_too_big_for_the_machine_are_one_line(home):
    model = str(home / "ck" / "r")
    r = runner.invoke(app, ["sample", "-m", model, "--seed", "99999999999999999999"])
    assert r.exit_code == 2 and "--seed" in one_error_line(r.stderr)
    t0 = time.perf_counter()
    r = runner.invoke(app, ["train", str(home / "play.txt"), "--hidden", "100000", "--steps", "1",
                            "--checkpoints", str(home / "big"), "--threads", "1"])  # fmt: skip
    line = one_error_line(r.stderr)
    assert r.exit_code == 1 and "parameters" in line and "this machine has" in line, line
    assert time.perf_counter() - t0 < 30  # refused before anything was allocated


def test_running_out_of_memory_in_training_saves_last_pt_and_says_so(tmp_path, monkeypatch):
    from charlstm.training import loop as training

    (tmp_path / "play.txt").write_text(PLAY)
    real, calls = training.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate "
                               "68719476736 bytes.")  # fmt: skip
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", step)
    r = runner.invoke(app, ["train", str(tmp_path / "play.txt"), "--steps", "50", "--name", "m",
                            "--checkpoints", str(tmp_path / "ck"), *TINY])  # fmt: skip
    line = one_error_line(r.stderr)
    assert r.exit_code == 1 and "out of memory at step 6" in line and "last.pt holds step 5" in line
    assert charlstm.info(tmp_path / "ck" / "m" / "last.pt")["steps"] == 5


def test_a_folder_says_which_files_it_left_out_and_why(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text(PLAY)
    (notes / "latin.txt").write_bytes(b"caf\xe9\n" * 10)
    (notes / "blob.bin").write_bytes(b"\x00\x01\x02" * 10)
    r = runner.invoke(app, ["train", str(notes), "--steps", "2", "--name", "f",
                            "--checkpoints", str(tmp_path / "ck"), *TINY[:-1]])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    note = next(line for line in r.stderr.splitlines() if "left out" in line)
    assert "latin.txt (not utf-8 at byte 3)" in note and "blob.bin (binary" in note
    assert "read 1 file;" in note
    shown = runner.invoke(app, ["info", str(tmp_path / "ck" / "f")])
    assert "2 left out as not text" in shown.stdout and "latin.txt" in shown.stdout


def _help(*args: str) -> str:
    text = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"}).stdout
    return re.sub(r"[\s│]+", " ", text)


def test_help_says_what_really_happens_and_shows_choices():
    train = _help("train")
    assert "Units per recurrent layer. Default: sized to the budget (char), 256" in train
    assert "Default: 32; word: 20; bpe: 8" in train and "Default: adamw; word: sgd" in train
    assert "<char|word|bpe>" in train and "<lstm|gru|rnn|peephole|coupled" in train
    assert "<adamw|sgd>" in train and "<full|adaptive>" in train
    assert "<bool>" not in train.replace("--help -h <bool>", "")  # flags take no value
    assert "pip install 'charlstm[plot]'" in _help("info")


def test_completion_offers_the_choices_of_cell_and_tokenizer():
    command = get_command(app)
    ctx = command.make_context("charlstm", ["train"], resilient_parsing=True)
    train = command.get_command(ctx, "train")
    sub = train.make_context("train", [], parent=ctx, resilient_parsing=True)
    params = {p.name: p for p in train.params}
    assert [c.value for c in params["cell"].shell_complete(sub, "")] == list(charlstm.config.CELLS)
    assert [c.value for c in params["tokenizer"].shell_complete(sub, "b")] == ["bpe"]
    assert [c.value for c in params["device"].shell_complete(sub, "c")] == ["cpu", "cuda"]


def test_small_things(home, tmp_path):
    play = str(home / "play.txt")
    # A --name already used is refused before any work; --overwrite replaces it.
    again = runner.invoke(app, ["train", play, "--steps", "2", "--name", "r",
                                "--checkpoints", str(home / "ck")])  # fmt: skip
    assert again.exit_code == 1 and "--overwrite" in one_error_line(again.stderr)
    ck = tmp_path / "ck"
    first = runner.invoke(app, ["train", play, "--steps", "3", "--name", "o",
                                "--checkpoints", str(ck), *TINY])  # fmt: skip
    over = runner.invoke(app, ["train", play, "--steps", "5", "--name", "o", "--overwrite",
                               "--checkpoints", str(ck), *TINY])  # fmt: skip
    assert first.exit_code == over.exit_code == 0, over.stderr
    assert charlstm.info(ck / "o")["steps"] == 5
    # Bad values are usage errors (2), every one.
    for flags, named in ((["--val-fraction", "1.0"], "--val-fraction"),
                         (["--threads", "-1"], "--threads")):  # fmt: skip
        bad = runner.invoke(app, ["train", play, "--steps", "1", *flags])
        assert bad.exit_code == 2 and named in one_error_line(bad.stderr), flags
    # evaluate --json says how many characters it skipped.
    (tmp_path / "emoji.txt").write_text("ROMEO: 🙂🙂 hi\n" * 20)
    ev = runner.invoke(app, ["evaluate", str(tmp_path / "emoji.txt"), "-m", str(home / "ck/r"),
                             "--json", "--threads", "1"])  # fmt: skip
    assert ev.exit_code == 0 and json.loads(ev.stdout)["skipped_chars"] == 40, ev.stderr
    # --no-echo-prime holds for --json too.
    quiet = ["--no-echo-prime", "--json", "--length", "10", "--seed", "1"]
    js = runner.invoke(app, ["sample", "-m", str(home / "ck/r"), "--prime", "ROMEO:", *quiet])
    assert js.exit_code == 0 and len(json.loads(js.stdout)["text"]) == 10


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_while_streaming_ends_the_stream(home, inherited):
    """SIGINT after the first 100 bytes ends the stream with status 130, also in a process
    started with SIGINT ignored (a shell script's background job, `cmd &`, is: Python keeps
    that, and the stream ran on). What came out is exactly the start of the seeded text."""
    ignore = inherited == "ignored"
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlstm", "sample", "-m", str(home / "ck" / "r"), "--length",
         "10000000", "--seed", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore else None,
    )  # fmt: skip
    try:
        first = b""  # raw reads: communicate() reads the pipe itself, past any read buffer
        while len(first) < 100:  # the process is streaming: past imports and loading
            chunk = os.read(proc.stdout.fileno(), 100)
            assert chunk, proc.stderr.read()
            first += chunk
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    out = (first + rest).decode()
    assert proc.returncode == 130, err
    assert err.decode().strip().splitlines()[-1] == "charlstm: interrupted"
    seeded = _sample_stdout(home, "--length", str(len(out)), "--seed", "1").decode()
    assert out == seeded  # into a pipe: no newline the model did not make


def _sample_stdout(home, *args: str, terminal: bool = False) -> bytes:
    """`charlstm sample` on the home model: its stdout as bytes, from a pipe or a terminal."""
    cmd = [sys.executable, "-m", "charlstm", "sample", "-m", str(home / "ck" / "r"), "-q", *args]
    if not terminal:
        r = subprocess.run(cmd, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout
    controller, tty = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=tty, stderr=subprocess.PIPE)
    os.close(tty)
    out = b""
    try:
        while chunk := os.read(controller, 4096):
            out += chunk
    except OSError:  # EIO: the child closed the terminal
        pass
    finally:
        os.close(controller)
    assert proc.wait(timeout=60) == 0
    return out.replace(b"\r\n", b"\n")  # the terminal's own line discipline


def test_stdout_is_exactly_prime_and_generated_text(home):
    def exact(*args: str) -> list[str]:  # the texts as --json gives them, from the same engine
        out = _sample_stdout(home, "--prime", "ROMEO", "--seed", "3", "--json", *args)
        return [json.loads(line)["text"] for line in out.decode().splitlines()]

    full, line = exact("-n", "300")[0], exact("-n", "300", "--stop", "\n")[0]
    assert line == full[: full.index("\n")] and len(line) < len(full)
    piped = _sample_stdout(home, "--prime", "ROMEO", "-n", "300", "--seed", "3", "--stop", "\n")
    assert piped == line.encode()  # the stop text's newline is not printed, nor one added
    ends = full.index("\n") + 1 - len("ROMEO")  # a sample ending in a newline: one, not two
    assert _sample_stdout(home, "--prime", "ROMEO", "-n", str(ends), "--seed", "3") == (
        full[: len("ROMEO") + ends].encode()
    )
    bare = _sample_stdout(home, "--prime", "ROMEO", "-n", "300", "--seed", "3", "--no-echo-prime")
    assert bare == full[len("ROMEO") :].encode()
    # On a terminal alone, a text that does not end a line gets a newline for the prompt.
    shown = _sample_stdout(home, "--prime", "ROMEO", "-n", "300", "--seed", "3", "--stop", "\n",
                           terminal=True)  # fmt: skip
    assert shown == (line + "\n").encode()
    shown = _sample_stdout(home, "--prime", "ROMEO", "-n", str(ends), "--seed", "3", terminal=True)
    assert shown == full[: len("ROMEO") + ends].encode()
    # -N: each sample whole under its header, its own last newline not doubled.
    texts = exact("-n", str(ends), "-N", "2")
    many = _sample_stdout(home, "--prime", "ROMEO", "-n", str(ends), "--seed", "3", "-N", "2")
    blocks = [f"--- sample {i} ---\n{t}" + ("" if t.endswith("\n") else "\n")
              for i, t in enumerate(texts, start=1)]  # fmt: skip
    assert many == "\n".join(blocks).encode()


def test_adapt_checks_the_prime_first_and_names_the_engine_it_runs_on(home):
    m = str(home / "ck" / "r")
    short = runner.invoke(app, ["sample", "-m", m, "--prime", "R", "--adapt", "3", "-q"])
    line = one_error_line(short.stderr)  # not "learning from the prime…", then "no prime"
    assert short.exit_code == 2 and "--adapt" in line and "'R'" in line and "2 tokens" in line
    none = runner.invoke(app, ["sample", "-m", m, "--adapt", "3", "-q"])
    assert none.exit_code == 2 and "give a --prime" in one_error_line(none.stderr)
    ok = runner.invoke(app, ["sample", "-m", m, "--prime", "ROMEO:", "--adapt", "1", "-n", "5",
                             "--seed", "1"])  # fmt: skip
    assert ok.exit_code == 0, ok.stderr
    assert "(torch)" in ok.stderr and "numpy" not in ok.stderr  # the engine that adapts
    assert "learning from the prime (1 pass)" in ok.stderr
    plain = runner.invoke(app, ["sample", "-m", m, "-n", "5", "--seed", "1"])
    assert "(numpy, model.safetensors)" in plain.stderr
    numpy = runner.invoke(app, ["sample", "-m", m, "--prime", "ROMEO:", "--adapt", "1",
                                "--engine", "numpy", "-q"])  # fmt: skip
    assert numpy.exit_code == 2 and "--engine numpy" in one_error_line(numpy.stderr)


# ----------------------------------------------------------------------------- friction


def test_one_checkpoints_folder_for_every_command(home, tmp_path):
    env = {"CHARLSTM_CHECKPOINTS": str(home / "ck")}
    for args in (["sample", "--length", "5", "--seed", "1"], ["info"],
                 ["evaluate", str(home / "play.txt"), "--threads", "1"],
                 ["visualize", str(home / "play.txt"), "--max-chars", "10"]):  # fmt: skip
        r = runner.invoke(app, args, env=env)
        assert r.exit_code == 0, (args, r.stderr)
    folder = runner.invoke(app, ["sample", "-m", str(home / "ck")])
    line = one_error_line(folder.stderr)
    assert folder.exit_code == 1 and "folder of runs" in line and " r" in line


def test_runs_lists_slims_and_deletes(home, tmp_path):
    ck = tmp_path / "ck"
    for name in ("one", "two"):
        r = runner.invoke(app, ["train", str(home / "play.txt"), "--steps", "3", "--name", name,
                                "--checkpoints", str(ck), *TINY])  # fmt: skip
        assert r.exit_code == 0, r.stderr
    listed = runner.invoke(app, ["runs", "--checkpoints", str(ck), "--json"])
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {r["name"] for r in rows} == {"one", "two"}
    assert all(r["steps"] == 3 and r["finished"] and r["tokenizer"] == "char" for r in rows)
    table = runner.invoke(app, ["runs", "--checkpoints", str(ck)])
    assert table.stdout.splitlines()[0].split()[:3] == ["name", "corpus", "tokens"]
    slim = runner.invoke(app, ["runs", "--checkpoints", str(ck), "--slim-finished"])
    assert slim.exit_code == 0 and not (ck / "one" / "last.pt").exists()
    assert (ck / "one" / "best.pt").exists()
    gone = runner.invoke(app, ["runs", "--checkpoints", str(ck), "--delete", "two"])
    assert gone.exit_code == 0 and not (ck / "two").exists()
    bad = runner.invoke(app, ["runs", "--checkpoints", str(ck), "--delete", "../x"])
    assert bad.exit_code == 2


def test_one_stream_runs_on_one_thread_a_batch_on_all(monkeypatch):
    monkeypatch.setattr(device, "threads_that_pay", lambda cores: cores)  # no core busy
    before = torch.get_num_threads()
    try:
        assert set_threads(0, streams=1) == 1
        assert set_threads(0, streams=64) == max(1, os.cpu_count() or 1)
        assert set_threads(3, streams=1) == 3
    finally:
        torch.set_num_threads(before)


def test_a_short_run_still_has_a_curve_to_plot(home):
    info = charlstm.info(home / "ck" / "r")
    assert len(info["train_curve"]) >= 40  # a 40-step run: a point every 2% of it
    assert [p["step"] for p in info["train_curve"]] == sorted(
        p["step"] for p in info["train_curve"]
    )


def test_the_budget_is_the_whole_run(tmp_path):
    (tmp_path / "play.txt").write_text(PLAY * 4)
    r = subprocess.run([sys.executable, "-m", "charlstm", "train", "play.txt", "--budget", "6s",
                        "--json", *TINY], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    # Setting up (importing torch, tokenizing) and the last validation are inside the budget.
    # On a machine so loaded that setting up alone outlasts the budget (6.8 and 8.6 s, with
    # three jobs on two cores), the run stops as soon as it can: a step, the last validation and
    # the save, which took 1.06 s there. Had the budget left out the setting up, the run would
    # end 6 s after it instead.
    setup = summary["setup_seconds"]
    assert setup > 0.5 and summary["total_seconds"] <= max(6.0, setup) + 2.0
    assert summary["elapsed"] <= max(0.0, 6 - setup) + 2.0


def test_logs_in_a_pipe_are_one_line_per_event(tmp_path):
    (tmp_path / "play.txt").write_text(PLAY)
    r = subprocess.run([sys.executable, "-m", "charlstm", "train", "play.txt", "--budget", "3s",
                        "--threads", "1", "-b", "4", "-t", "16"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    sized = [line for line in r.stderr.splitlines() if line.startswith("sized for the budget:")]
    assert sized and sized[0].endswith(
        "(--hidden, --layers, --lr, --dropout, --weight-decay, --batch-size, --window, "
        "--attention)."
    )
    assert max(len(line) for line in r.stderr.splitlines()) > 120  # not wrapped at 80


def test_reading_stdin_from_a_terminal_says_so(home):
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "charlstm", "sample", "-m", str(home / "ck" / "r"), "--prime",
             "-", "--length", "3"], stdin=terminal, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        os.write(controller, b"ROMEO:\n\x04")  # a line, then Ctrl-D
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert proc.returncode == 0, err
    assert b"reading stdin; end with Ctrl-D" in err and out.startswith(b"ROMEO:")


def test_stop_texts_and_a_prime_from_a_file(home, tmp_path):
    model = charlstm.load(home / "ck" / "r")
    full = "".join(model.generate("ROMEO:", length=300, seed=3))
    stop = full[40:42]
    cut = "".join(model.generate("ROMEO:", length=300, seed=3, stop=[stop]))
    assert cut == full[: full.index(stop)]
    (tmp_path / "prime.txt").write_text("ROMEO:")
    r = runner.invoke(app, ["sample", "-m", str(home / "ck" / "r"), "--prime-file",
                            str(tmp_path / "prime.txt"), "--length", "300", "--seed", "3",
                            "--stop", stop])  # fmt: skip
    assert r.exit_code == 0 and r.stdout == "ROMEO:" + cut
    batch = runner.invoke(app, ["sample", "-m", str(home / "ck" / "r"), "-N", "2", "--json",
                                "--length", "300", "--seed", "3", "--stop", "\n"])  # fmt: skip
    assert all("\n" not in json.loads(line)["text"] for line in batch.stdout.splitlines())


def test_chat_continues_one_state_line_after_line(home):
    r = subprocess.run(
        [sys.executable, "-m", "charlstm", "chat", "-m", str(home / "ck" / "r"), "--seed", "5",
         "--length", "40", "--threads", "1"],
        input="ROMEO: hello\nJULIET: and you\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    session = charlstm.load(home / "ck" / "r").session(seed=5)
    expected = ""
    for line in ("ROMEO: hello", "JULIET: and you"):
        session.feed(line + "\n")
        reply = "".join(session.reply(40, ["\n\n"]))
        expected += reply if reply.endswith("\n") else reply + "\n"  # a reply's line, once
    assert r.stdout == expected
