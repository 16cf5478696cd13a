"""Files an attacker wrote: model.safetensors, run.json and the tokenizer inside a model file or a
checkpoint, hundreds of damaged versions of each (tests/fuzzfiles.py). Every one is refused in
one line or used as it is: never a traceback, an abort or a hang. (best.pt and last.pt are
fuzzed in test_promises.py; benchmarks/fuzz_files.py runs thousands of cases of each.)
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
from click.testing import CliRunner

from charlstm.cli import app
from charlstm.formats.checkpoint import load_checkpoint
from tests.conftest import PLAY
from tests.fuzzfiles import (
    DEEP,
    hostile_run_json,
    hostile_safetensors,
    hostile_tokenizer,
    join_safetensors,
    split_safetensors,
    train_tiny_runs,
)

runner = CliRunner()
cli = typer.main.get_command(app)  # built once: typer builds it anew on every invoke (~0.1 s)
KINDS = ("char", "word", "bpe")
CASES = 504  # of each file: model.safetensors, run.json, the tokenizer


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """Three tiny runs (char, word, bpe) under home/ck."""
    home = tmp_path_factory.mktemp("hostile")
    train_tiny_runs(home, cli, PLAY)
    return home


def _timeout(signum, frame):
    raise TimeoutError("a command hung on a hostile file")


def _invoke(args: list[str]):
    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(30)
    try:
        r = runner.invoke(cli, args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return r


def _judge(r, what: object) -> int:
    assert r.exception is None or isinstance(r.exception, SystemExit), (what, repr(r.exception))
    assert r.exit_code in (0, 1, 2), (what, r.exit_code)
    if r.exit_code:
        one_error_line(r.stderr)
    return r.exit_code


def test_hostile_model_files_give_one_line_never_a_traceback(home, tmp_path):
    pristine = {k: (home / "ck" / k / "model.safetensors").read_bytes() for k in KINDS}
    target = tmp_path / "model.safetensors"
    outcomes: dict[int, int] = {}
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for case in range(CASES):
        kind = KINDS[case % 3]
        target.write_bytes(hostile_safetensors(pristine[kind], case))
        code = _judge(_invoke(["info", str(target), "-q"]), (kind, case))
        if case % 4 == 0:
            args = ["sample", "-m", str(target), "--length", "4", "--seed", "1", "-q",
                    "--engine", "numpy", "--prime", "R"]  # fmt: skip
            _judge(_invoke(args), (kind, case, "sample"))
        outcomes[code] = outcomes.get(code, 0) + 1
    assert outcomes.get(1, 0) > CASES // 2, outcomes
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before  # KiB
    assert grown < 300 * 1024, f"peak memory grew by {grown // 1024} MiB"


def _crafted(home: Path, kind: str, edit) -> bytes:
    """The model file of the `kind` run with its metadata edited by `edit` and signed again."""
    from tests.fuzzfiles import _signed

    header, payload = split_safetensors((home / "ck" / kind / "model.safetensors").read_bytes())
    edit(header["__metadata__"])
    return join_safetensors(_signed(header, payload), payload)


def _edit_vocab(change):
    def edit(meta):
        tok = json.loads(meta["tokenizer"])
        inner = json.loads(tok["json"])
        change(inner)
        tok["json"] = json.dumps(inner)
        meta["tokenizer"] = json.dumps(tok)

    return edit


def _last_key(inner: dict) -> str:
    return max(inner["model"]["vocab"], key=inner["model"]["vocab"].get)


CRAFTED = {  # the cases the issue found, each: (kind, edit, what the one line says)
    "metadata nested 100,000 deep": ("char", lambda m: m.update(run=DEEP), "nests deeper"),
    "format_version '²'": ("char", lambda m: m.update(format_version="²"), "format_version"),
    "a BPE key no merge makes": ("bpe", _edit_vocab(
        lambda t: t["model"]["vocab"].update({"ÄŁx": len(t["model"]["vocab"]) - 1})
        or t["model"]["vocab"].pop(_last_key(t))), "tokenizer"),
    "a BPE key no byte makes": ("bpe", _edit_vocab(
        lambda t: t["model"]["vocab"].update({"€": t["model"]["vocab"].pop(_last_key(t))})),
        "tokenizer"),
    "sparse ids": ("word", _edit_vocab(
        lambda t: t["model"]["vocab"].update({_last_key(t): 1000})), "ids"),
    "a word id of 2^31-1": ("word", _edit_vocab(
        lambda t: t["model"]["vocab"].update({_last_key(t): 2**31 - 1})), "ids"),
    "a catastrophic pre-tokenizer": ("word", _edit_vocab(lambda t: t.update(pre_tokenizer={
        "type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated",
        "invert": False})), "pre_tokenizer"),
    "run's step a text": ("char", lambda m: m.update(run=json.dumps(
        {**json.loads(m["run"]), "step": "12"})), "step"),
    "run's corpus a list": ("char", lambda m: m.update(run=json.dumps(
        {**json.loads(m["run"]), "corpus": [1]})), "corpus"),
    "corpus chars an empty list": ("char", lambda m: m.update(run=json.dumps(  # benchmark case
        {**json.loads(m["run"]), "corpus": {**json.loads(m["run"])["corpus"], "chars": []}})),
        "corpus"),
}  # fmt: skip


@pytest.mark.parametrize("what", list(CRAFTED))
def test_crafted_model_files_from_the_issue_are_refused_in_one_line(home, tmp_path, what):
    kind, edit, says = CRAFTED[what]
    path = tmp_path / "model.safetensors"
    path.write_bytes(_crafted(home, kind, edit))
    for args in (["info", str(path)], ["sample", "-m", str(path), "--length", "3", "-q"]):
        r = _invoke(args)
        assert r.exit_code == 1, (what, r.stdout, r.stderr, r.exception)
        assert says in one_error_line(r.stderr), (what, r.stderr)


def test_a_handful_through_the_real_cli(home, tmp_path):
    """The same refusals from a real process: no abort, no traceback, one line."""
    for what in ("metadata nested 100,000 deep", "a word id of 2^31-1",
                 "a catastrophic pre-tokenizer"):  # fmt: skip
        kind, edit, says = CRAFTED[what]
        path = tmp_path / f"{kind}.safetensors"
        path.write_bytes(_crafted(home, kind, edit))
        p = subprocess.run([sys.executable, "-m", "charlstm", "info", str(path)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert p.returncode == 1 and says in one_error_line(p.stderr), (what, p.stderr)


def test_run_record_edited_after_writing_is_refused(home, tmp_path):
    """The run record (what info shows) is covered by the file's checksum."""
    header, payload = split_safetensors((home / "ck" / "char" / "model.safetensors").read_bytes())
    run = json.loads(header["__metadata__"]["run"])
    header["__metadata__"]["run"] = json.dumps({**run, "step": run["step"] + 1000})
    path = tmp_path / "model.safetensors"
    path.write_bytes(join_safetensors(header, payload))
    r = runner.invoke(cli, ["info", str(path)])
    assert r.exit_code == 1 and "'run' was changed" in one_error_line(r.stderr), r.stderr


def test_hostile_tokenizers_in_checkpoints_give_one_line(home, tmp_path):
    pristine = {k: load_checkpoint(home / "ck" / k / "best.pt") for k in KINDS}
    target = tmp_path / "best.pt"
    outcomes: dict[int, int] = {}
    for case in range(CASES):
        kind = KINDS[case % 3]
        ckpt = {**pristine[kind], "tokenizer": hostile_tokenizer(pristine[kind]["tokenizer"], case)}
        torch.save(ckpt, target)
        code = _judge(_invoke(["info", str(target), "-q"]), (kind, case))
        outcomes[code] = outcomes.get(code, 0) + 1
    assert outcomes.get(1, 0) > CASES // 2, outcomes


def test_one_bad_run_json_hides_no_other_run(home, tmp_path):
    root = tmp_path / "ck"
    for kind in KINDS:  # run.json and best.pt are all `runs` reads
        (root / kind).mkdir(parents=True)
        for name in ("run.json", "best.pt"):
            (root / kind / name).write_bytes((home / "ck" / kind / name).read_bytes())
    pristine = (home / "ck" / "word" / "run.json").read_text()
    marked = 0
    for case in range(CASES):
        (root / "word" / "run.json").write_bytes(hostile_run_json(pristine, case))
        args = ["runs", "--checkpoints", str(root)] + (["--json"] if case % 2 else [])
        r = _invoke(args)
        assert r.exception is None or isinstance(r.exception, SystemExit), (case, r.exception)
        assert r.exit_code == 0, (case, r.stderr)
        assert "Traceback" not in r.stderr
        names = [json.loads(line)["name"] for line in r.stdout.splitlines()] if case % 2 else [
            line.split()[0] for line in r.stdout.splitlines()[1:]]  # fmt: skip
        assert sorted(names) == sorted(KINDS), (case, r.stdout)
        marked += "damaged" in r.stdout
    assert marked > CASES // 4, marked


def test_info_plot_of_a_model_file_says_where_the_curve_is(home, tmp_path):
    """A model file keeps no metrics (the issue: KeyError 'train_curve'): one line naming the
    checkpoint that has them."""
    out = tmp_path / "curve.png"
    r = runner.invoke(cli, ["info", str(home / "ck" / "char" / "model.safetensors"),
                            "--plot", str(out), "-q"])  # fmt: skip
    assert r.exit_code == 1 and "best.pt --plot" in one_error_line(r.stderr), r.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_info_shows_one_parameter_count_and_one_fingerprint(home, kind):
    """best.pt and its model.safetensors describe one model: the same parameters (the ones
    training updates) and the same fingerprint."""
    from charlstm.api import info
    from charlstm.formats.checkpoint import read_checkpoint

    run = home / "ck" / kind
    a, b = info(run / "best.pt"), info(run / "model.safetensors")
    trained = read_checkpoint(run / "best.pt").model().num_parameters()
    assert a["parameters"] == b["parameters"] == trained
    assert a["fingerprint"] == b["fingerprint"] and len(a["fingerprint"]) == 16
    r = runner.invoke(cli, ["info", str(run / "best.pt")])
    assert f"fingerprint  {a['fingerprint']}" in r.stdout


def test_the_model_files_corpus_fields_are_corpus_infos():
    from dataclasses import fields

    from charlstm.data.tokens import CorpusInfo
    from charlstm.formats.model_file import CORPUS_FIELDS

    assert CORPUS_FIELDS == {f.name: str(f.type) for f in fields(CorpusInfo)}


def test_decompress_with_another_model_names_the_fingerprints_info_shows(home, tmp_path):
    """One fingerprint of a model: the one `info` shows for best.pt and model.safetensors is
    the one a .clz carries and a refusal names."""
    pytest.importorskip("constriction")
    from charlstm.api import info

    text = tmp_path / "t.txt"
    text.write_text(PLAY[:400])
    r = runner.invoke(cli, ["compress", str(text), "-m", str(home / "ck" / "char"), "-q"])
    assert r.exit_code == 0, r.stderr
    (tmp_path / "t.clz").write_bytes(r.stdout_bytes)
    r = runner.invoke(cli, ["decompress", str(tmp_path / "t.clz"), "-m", str(home / "ck" / "bpe")])
    line = one_error_line(r.stderr)
    ours, theirs = (info(home / "ck" / k / "best.pt")["fingerprint"] for k in ("char", "bpe"))
    assert f"fingerprint {ours}" in line and f"this one is {theirs}" in line, line
