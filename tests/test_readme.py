"""The README's Python snippets, extracted from README.md and run as written against tiny models
made here: the ONNX one in a folder holding the `model.onnx` it names, the OpenAI-client one
against a real `charlstm serve` serving a model under the name it asks for. A new snippet must be
run here too (or named in NOT_RUN with the reason)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlstm.cli import app
from tests.conftest import PLAY

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
NOT_RUN = {  # a phrase of the snippet: why the suite does not run it
    "from charlstm import load, train": "it trains for 2 minutes on corpus.txt",
}


def _block(marker: str) -> str:
    found = [b for b in BLOCKS if marker in b]
    assert len(found) == 1, f"one README snippet with {marker!r}, found {len(found)}"
    return found[0]


def _train(home: Path, name: str, *args: str) -> Path:
    (home / "play.txt").write_text(PLAY, encoding="utf-8")
    r = CliRunner().invoke(app, ["train", str(home / "play.txt"), "--hidden", "16", "--steps", "4",
                                 "--threads", "1", "--name", name, "--checkpoints",
                                 str(home / "checkpoints"), "-q", *args])  # fmt: skip
    assert r.exit_code == 0, r.output
    return home / "checkpoints" / name


def _run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    return out.getvalue()


def test_every_python_snippet_is_run_here():
    runnable = ("onnxruntime", "from openai import OpenAI")
    for block in BLOCKS:
        assert any(m in block for m in (*runnable, *NOT_RUN)), f"a new README snippet:\n{block}"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_onnx_snippet_runs_as_written(tmp_path, monkeypatch, cell):
    """On a model of other shapes than the README's (2×16, not 2×256; a GRU carries no c): the
    state's shapes come from the session, the vocabulary from the file's metadata."""
    pytest.importorskip("onnxruntime")
    run = _train(tmp_path, "tiny", "--cell", cell)
    r = CliRunner().invoke(app, ["export", str(run), "--onnx", str(tmp_path / "model.onnx")])
    assert r.exit_code == 0, r.output
    monkeypatch.chdir(tmp_path)
    text = _run(_block("onnxruntime"))
    assert text.startswith("ROMEO:") and len(text) > 100, text
    assert set(text) <= set(PLAY)

    import onnxruntime as ort

    from charlstm.api import info

    meta = ort.InferenceSession("model.onnx").get_modelmeta()
    fingerprint = meta.custom_metadata_map["fingerprint"]
    assert fingerprint == info(run / "best.pt")["fingerprint"]
    assert fingerprint == info(run / "model.safetensors")["fingerprint"]
    assert meta.description.endswith(f"fingerprint {fingerprint}")
    assert json.loads(meta.custom_metadata_map["model_config"])["cell"] == cell


@pytest.mark.parametrize("marker", ["client.completions.create", "client.chat.completions.create"])
def test_the_openai_client_snippets_run_as_written(tmp_path, marker):
    """Against `charlstm serve` on a free loopback port, serving a tiny model under the name the
    snippet asks for; only the port differs from the README's."""
    pytest.importorskip("openai")
    pytest.importorskip("uvicorn")
    code = _block(marker)
    name = re.search(r'model="(\w+)"', code).group(1)
    run = _train(tmp_path, name)
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlstm", "serve", str(run), "--port", "0", "--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line, deadline = "", time.monotonic() + 60
        while "listening on" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stderr.readline()
        assert "listening on http://127.0.0.1:" in line, line
        base = line.split()[2].rstrip("/")
        assert "http://127.0.0.1:8000" in code
        text = _run(code.replace("http://127.0.0.1:8000", base))
        assert len(text) > (20 if "chat" not in marker else 1), text  # a turn may be short
    finally:
        proc.terminate()
        proc.wait(timeout=30)
