"""Every registered cell runs everywhere (#28, acceptance 3): for each cell in cells.CELLS, one
tiny model trained through the CLI, then

    sample --engine torch  ==  sample --engine numpy        the same text for the same seed
    ONNX (onnxruntime), the page (Chromium)  ==  sample --greedy
    compress | decompress  ==  the input                    (or the compressor's one-line refusal)
    the server's decode loop (serve.batching.Engine)  ==  sample, for a seed

A new cell file is picked up here with no change: the list is cells.CELLS.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from charlstm.cells import CELLS
from charlstm.cli import app
from tests.conftest import PLAY
from tests.test_export import CHROMIUM, IN_CI, _body_data, _chromium

PRIME = "ROMEO:"
runner = CliRunner()


def cli(*args: str) -> str:
    """Run a command in process; its stdout (it must succeed)."""
    r = runner.invoke(app, [*args])
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.fixture(scope="module", params=list(CELLS))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 2-layer model of the cell, trained through the CLI (shared by this module's tests
    of the cell): 60 steps, enough for a greedy text that is not one character repeated."""
    cell = request.param
    root = tmp_path_factory.mktemp(cell)
    (root / "play.txt").write_text(PLAY, encoding="utf-8")
    cli("train", str(root / "play.txt"), "--cell", cell, "--hidden", "16", "--layers", "2",
        "--lr", "3e-2", "--dropout", "0", "--steps", "60", "--eval-every", "60", "-b", "8",
        "-t", "16", "--threads", "1", "--checkpoints", str(root / "ck"), "--name", cell,
        "--mogrifier-rounds", "2", "--json")  # fmt: skip
    return root / "ck" / cell


def sample(run: Path, *args: str) -> str:
    return cli("sample", "-m", str(run), "--threads", "1", "-q", "--prime", PRIME,
               "--no-echo-prime", *args)  # fmt: skip


def greedy(run: Path, n: int) -> str:
    return sample(run, "--greedy", "-n", str(n))


def test_torch_and_numpy_give_the_same_text_for_a_seed(run: Path) -> None:
    args = ("--seed", "5", "--length", "80", "--temp", "1.0")
    text = sample(run, "--engine", "torch", *args)
    assert len(text) == 80
    assert sample(run, "--engine", "numpy", *args) == text


def test_onnx_gives_sample_greedys_text(run: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from charlstm.formats.model_file import read_portable

    cli("export", str(run), "--onnx", str(tmp_path / "m.onnx"), "-q")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    tokenizer = read_portable(run / "model.safetensors").tokenizer
    names = [i.name for i in session.get_inputs()][1:]  # "token", then the state's parts
    state = {n: np.zeros((2, 1, 16), np.float32) for n in names}  # (L, B, H)

    def step(token: int) -> np.ndarray:
        nonlocal state
        logits, *parts = session.run(None, {"token": np.array([token], np.int64), **state})
        state = dict(zip(names, parts, strict=True))
        return logits[0]  # (V,)

    for token in tokenizer.encode(PRIME):  # the prime warms the state
        logits = step(int(token))
    ids: list[int] = []
    for _ in range(60):
        ids.append(int(np.argmax(logits)))  # greedy
        logits = step(ids[-1])
    assert tokenizer.decode(ids) == greedy(run, 60)


@pytest.mark.skipif(CHROMIUM is None and not IN_CI, reason="needs chromium (.ci/run installs it)")
def test_the_page_gives_sample_greedys_text_in_chromium(run: Path, tmp_path: Path) -> None:
    from urllib.parse import urlencode

    page = tmp_path / "play.html"
    cli("export", str(run), "--html", str(page), "-q")
    query = urlencode([("run", "sync"), ("greedy", "1"), ("length", "60"), ("prime", PRIME)])
    data = _body_data(_chromium(tmp_path, f"{page.as_uri()}?{query}", "--dump-dom"))
    assert data.get("state") == "done", data
    assert json.loads(data["results"]) == [greedy(run, 60)]


def test_compress_and_decompress_round_trip_exactly(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("constriction")
    text = PLAY[:300].encode("utf-8")
    (tmp_path / "in.txt").write_bytes(text)
    r = runner.invoke(app, ["compress", str(tmp_path / "in.txt"), "-m", str(run), "-q",
                            "--threads", "1"])  # fmt: skip
    assert r.exit_code == 0, r.output  # every cell compresses: its plan runs in integers
    (tmp_path / "out.clz").write_bytes(r.stdout_bytes)
    r = runner.invoke(app, ["decompress", str(tmp_path / "out.clz"), "-m", str(run), "-q",
                            "--threads", "1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == text


def test_the_servers_decode_loop_gives_samples_text_for_a_seed(run: Path) -> None:
    from charlstm.api import load
    from charlstm.config import SampleConfig
    from charlstm.serve.batching import Done, Engine, Failed, Job, Text

    model = load(run, engine="torch")
    engine = Engine({"m": model}, max_batch=4)
    text, done = [], threading.Event()

    def publish(updates) -> None:
        for _, events in updates:
            for e in events:
                assert not isinstance(e, Failed), e
                text.append(e.text if isinstance(e, Text) else "")
                if isinstance(e, Done):
                    done.set()

    engine.start(publish)
    try:
        cfg = SampleConfig(length=60, temperature=1.0)
        engine.submit(Job("m", model.encode_prime(PRIME), cfg, seed=7))
        assert done.wait(60)
    finally:
        engine.stop()
    assert not engine.errors
    assert "".join(text) == sample(run, "--seed", "7", "--length", "60", "--temp", "1.0")
