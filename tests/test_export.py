"""The model out of torch (#18): model.safetensors, the numpy engine, the page, ONNX.

Every engine is held against torch's model: numpy to 1e-5 in probability over 500 steps for
every cell, the JavaScript step under Node to 1e-4, the page's greedy text in headless Chromium
equal to `charlstm sample --greedy`, the ONNX graph under onnxruntime to 1e-4 in logits.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlstm import cells, config
from charlstm.api import load
from charlstm.cli import app
from charlstm.config import SampleConfig
from charlstm.data.tokenizer import CharTokenizer
from charlstm.export.convert import model_from_portable
from charlstm.formats.model_file import Portable, portable_bytes, read_portable
from charlstm.generate.choose import choose
from charlstm.generate.loop import Request, generate
from charlstm.generate.numpy_engine import NumpyStepper
from charlstm.generate.torch_engine import TorchStepper
from charlstm.model.language_model import LanguageModel, ModelConfig
from charlstm.model.weights import portable_weights
from tests.conftest import PLAY

CELLS = ("lstm", "gru", "rnn", "peephole", "coupled")
ALL_CELLS = config.CELLS  # the model file and the numpy engine carry every cell
REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium")
NODE = shutil.which("node")
# CI installs Chromium (.ci/run) and has Node: there, a missing one fails instead of skipping.
IN_CI = bool(os.environ.get("CI"))


def _portable(cell: str, *, vocab: int = 11, hidden: int = 16, layers: int = 2, **cfg) -> tuple:
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=vocab, cell=cell, hidden_size=hidden,
                                      num_layers=layers, **cfg)).eval()  # fmt: skip
    tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz"[:vocab])
    return model, Portable(model.cfg, tok, portable_weights(model))


def _probs(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def _torch_logits(model: LanguageModel, ids: np.ndarray) -> np.ndarray:
    """The training model's logits at every position of ids (T,): (T, V)."""
    with torch.inference_mode():
        return model(torch.from_numpy(ids)[None])[0][0].numpy()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny char model trained through the CLI, as the README's first command makes one."""
    cwd = tmp_path_factory.mktemp("export")
    (cwd / "play.txt").write_text(PLAY, encoding="utf-8")
    result = CliRunner().invoke(app, ["train", str(cwd / "play.txt"), "--hidden", "32",
                                      "--steps", "40", "--threads", "1", "--name", "tiny",
                                      "--checkpoints", str(cwd / "checkpoints"), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return cwd / "checkpoints" / "tiny"


# ----------------------------------------------------------------------------- numpy engine


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_numpy_engine_gives_torchs_probabilities_over_500_steps(cell, monkeypatch):
    """After a prime and at each of 500 further steps, the numpy step's probabilities equal the
    training model's (one full forward pass over the whole sequence) to 1e-5; both with layer 0
    as a table and without one (an INPUT_GATED cell, the Mogrifier, never has one)."""
    model, portable = _portable(cell, embed_size=4)
    ids = np.random.default_rng(1).integers(0, 11, 520)
    expected = _probs(_torch_logits(model, ids))  # (520, V)
    for table in (True, False):
        monkeypatch.setattr("charlstm.generate.numpy_engine.MAX_TABLE", 1 << 24 if table else 0)
        stepper = NumpyStepper(portable)
        assert (stepper.table is not None) == (table and not stepper.gated)  # gated: no table
        got = [_probs(stepper.prime(ids[:20]))[0]]
        got += [_probs(stepper.step(ids[t : t + 1]))[0] for t in range(20, 520)]
        np.testing.assert_allclose(np.array(got), expected[19:], atol=1e-5, err_msg=cell)


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_same_seed_same_text_on_both_engines(cell):
    """Greedy, and sampled with temperature, top-k and top-p from a fixed seed: the numpy
    generator picks exactly the tokens torch's does, one stream and a batch of three."""
    model, portable = _portable(cell, vocab=20, hidden=24)
    prime = np.array([1, 2, 3, 4, 5])
    for cfg in (SampleConfig(length=300, temperature=0), SampleConfig(length=300),
                SampleConfig(length=300, temperature=1.3, top_k=8),
                SampleConfig(length=300, temperature=1.0, top_p=0.9)):  # fmt: skip
        for batch in (1, 3):
            a, b = ([[] for _ in range(batch)] for _ in "ab")
            for stepper, into in ((TorchStepper(model), a), (NumpyStepper(portable), b)):
                req = Request(prime, cfg, seed=7, n=batch)
                for row, text in generate(stepper, portable.tokenizer, req):
                    into[row].append(text)
            assert a == b and sum(map(len, a)) >= 300 * batch, (cell, cfg, batch)


def test_model_file_round_trips_and_rebuilds_the_torch_model(tmp_path):
    """Written and read back, a model file holds the same tensors, config and tokenizer; the
    torch model rebuilt from it gives the original's logits, for every cell and tied weights."""
    cases = [(c, {}) for c in ALL_CELLS] + [("lstm", {"tie_weights": True})]
    cases += [("mogrifier", {"mogrifier_rounds": r}) for r in (0, 1, 4)]
    for cell, extra in cases:
        model, portable = _portable(cell, **extra)
        path = tmp_path / f"{cell}.safetensors"
        path.write_bytes(portable_bytes(portable.weights, model.cfg, portable.tokenizer.to_dict()))
        back = read_portable(path)
        assert back.config == model.cfg and back.tokenizer.to_dict() == portable.tokenizer.to_dict()
        for name, w in portable.weights.items():
            assert np.array_equal(back.weights[name], w), name
        ids = np.arange(11)
        np.testing.assert_allclose(_torch_logits(model_from_portable(back), ids),
                                   _torch_logits(model, ids), atol=1e-6)  # fmt: skip


def test_training_writes_the_model_file_and_sample_uses_it(run_dir):
    """Each new best writes model.safetensors beside best.pt, equal to `export`'s; sample then
    runs on numpy and prints what torch prints; a model file older than best.pt (a crash
    between the two writes) is not used."""
    path = run_dir / "model.safetensors"
    trained = read_portable(path)
    assert trained.run["step"] == 40
    runner = CliRunner()

    def sample(*args: str) -> tuple[str, str]:
        r = runner.invoke(app, ["sample", "-m", str(run_dir), "--seed", "3", "--length", "200",
                                "--prime", "ROMEO:", "--threads", "1", *args])  # fmt: skip
        assert r.exit_code == 0, r.output
        return r.stdout, " ".join(r.stderr.split())  # (Rich wraps long lines)

    text, err = sample()
    assert "best.pt (numpy, model.safetensors)" in err
    text_torch, err_torch = sample("--engine", "torch")
    assert text_torch == text and "(torch)" in err_torch
    older = (run_dir / "best.pt").stat().st_mtime_ns - 10**9
    os.utime(path, ns=(older, older))  # as if best.pt had been written after it
    assert "(torch)" in sample()[1]
    r = runner.invoke(app, ["sample", "-m", str(run_dir), "--engine", "numpy", "-n", "5"])
    assert r.exit_code == 1 and "charlstm export" in r.stderr
    r = runner.invoke(app, ["export", str(run_dir), "-q"])
    assert r.exit_code == 0 and r.stdout == "", r.output
    assert read_portable(path).fingerprint == trained.fingerprint
    assert "(numpy, model.safetensors)" in sample()[1]


def test_sampling_from_the_model_file_never_imports_torch(run_dir):
    """`charlstm sample` on a run with model.safetensors, in a process where importing torch
    fails (as in an environment without it): the same text as torch's, and torch is not in
    sys.modules at the end. `charlstm export --html` from the model file also needs no torch."""
    expected = "".join(load(run_dir, engine="torch").generate("ROMEO:", length=120, seed=5))
    script = textwrap.dedent(f"""
        import sys

        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is not installed here")

        sys.meta_path.insert(0, NoTorch())
        from charlstm.cli import app
        for args in (["sample", "-m", {str(run_dir)!r}, "--prime", "ROMEO:", "-n", "120",
                      "--seed", "5", "--no-echo-prime", "-q"],
                     ["export", {str(run_dir / "model.safetensors")!r}, "--html",
                      {str(run_dir / "page.html")!r}, "-q"]):
            try:
                app(args)
            except SystemExit as e:
                assert not e.code, e.code
        assert "torch" not in sys.modules, "torch was imported"
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected
    assert (run_dir / "page.html").stat().st_size > 0


def test_load_chooses_the_engine_and_evaluates_with_torch(run_dir):
    """load(): numpy for a run with its model file, torch when asked (also from the model file
    alone); the same text either way; evaluating a numpy-engine model builds torch's model from
    best.pt and gives best.pt's figures; a wrong engine or numpy on a GPU is a usage error."""
    from charlstm.errors import UsageError

    text = "ROMEO:\nBut soft, what light through yonder window breaks?\n"
    fast, slow = load(run_dir), load(run_dir, engine="torch")
    alone = load(run_dir / "model.safetensors", engine="torch")
    assert (fast.engine, slow.engine, alone.engine) == ("numpy", "torch", "torch")
    assert fast.path == slow.path == run_dir / "best.pt"
    samples = {"".join(m.generate("JULIET:", length=80, seed=2)) for m in (fast, slow, alone)}
    assert len(samples) == 1
    assert fast.samples(3, "JULIET:", length=40, seed=4) == slow.samples(3, "JULIET:", length=40,
                                                                        seed=4)  # fmt: skip
    assert fast.evaluate(text).loss == slow.evaluate(text).loss
    assert abs(alone.evaluate(text).loss - slow.evaluate(text).loss) < 1e-5
    for bad in ({"engine": "jax"}, {"engine": "numpy", "device": "cuda"}):
        with pytest.raises(UsageError):
            load(run_dir, **bad)


# ----------------------------------------------------------------------------- bad input


def _mutants(good: Path, tmp: Path) -> dict[str, Path]:
    """Model files that must be refused, each with its own flaw."""
    from safetensors import safe_open
    from safetensors.numpy import save

    with safe_open(str(good), framework="numpy") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}

    def write(name: str, tensors: dict, meta: dict | None) -> Path:
        path = tmp / f"{name}.safetensors"
        path.write_bytes(save(tensors, metadata=meta))
        return path

    cfg = json.loads(meta["model_config"])
    bigger = {**meta, "model_config": json.dumps({**cfg, "hidden_size": cfg["hidden_size"] + 1})}
    changed = dict(tensors, **{"head.b": tensors["head.b"] + 1})
    nan = dict(tensors, **{"head.b": np.full_like(tensors["head.b"], np.nan)})
    doubles = dict(tensors, **{"head.b": tensors["head.b"].astype(np.float64)})
    fewer = {k: v for k, v in tensors.items() if k != "layer1.w_h"}
    truncated = tmp / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp / "text.safetensors"
    text.write_text("ROMEO: not a model\n")
    return {
        "missing": tmp / "nothing-here.safetensors",
        "foreign": write("foreign", {"weight": np.ones((2, 2), np.float32)}, None),
        "foreign-metadata": write("foreign-meta", tensors, {"format": "pt"}),
        "config-against-tensors": write("bigger", tensors, bigger),
        "changed-tensor": write("changed", changed, meta),
        "nan": write("nan", nan, meta),
        "float64": write("doubles", doubles, meta),
        "missing-tensor": write("fewer", fewer, meta),
        "extra-tensor": write("extra", dict(tensors, extra=np.ones(1, np.float32)), meta),
        "bad-json": write("badjson", tensors, {**meta, "tokenizer": "{not json"}),
        "newer": write("newer", tensors, {**meta, "format_version": "99"}),
        "truncated": truncated,
        "not-safetensors": text,
    }


def test_bad_model_files_give_one_stderr_line_and_exit_1(run_dir, tmp_path):
    """A missing file, a foreign safetensors file, a model file whose metadata does not match
    its tensors (shapes, dtype, names, NaN, fingerprint), bad JSON, a newer format, a truncated
    or text file: `sample`, `export --html`, `export --onnx` and `info` each print one stderr
    line and exit 1, with nothing on stdout."""
    runner = CliRunner()
    for flaw, path in _mutants(run_dir / "model.safetensors", tmp_path).items():
        for args in (["sample", "-m", str(path), "-n", "5"],
                     ["export", str(path), "--html", str(tmp_path / "p.html")],
                     ["export", str(path), "--onnx", str(tmp_path / "m.onnx")],
                     ["info", str(path)]):  # fmt: skip
            r = runner.invoke(app, args)
            lines = r.stderr.strip().splitlines()
            assert r.exit_code == 1 and r.stdout == "", (flaw, args, r.output)
            assert len(lines) == 1 and lines[0].startswith("charlstm: error: "), (flaw, lines)
            assert "Traceback" not in r.stderr
    assert not (tmp_path / "p.html").exists() and not (tmp_path / "m.onnx").exists()


def test_info_reads_a_model_file(run_dir):
    r = CliRunner().invoke(app, ["info", str(run_dir / "model.safetensors"), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["model"]["hidden_size"] == 32 and data["steps"] == 40


# ----------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_onnx_graph_gives_charlstms_logits_over_100_steps(cell, monkeypatch):
    """The exported one-step graph, run in onnxruntime for 100 steps with its state fed back
    (two streams), gives the training model's logits and the numpy engine's at every position
    to 1e-4, for every cell, with layer 0 as a table and without one; its inputs are `token`
    and the cell's state parts by name (lstm: h, c), its outputs `logits` and each part's _out."""
    ort = pytest.importorskip("onnxruntime")
    from charlstm.export.onnx_graph import onnx_bytes

    model, portable = _portable(cell)
    ids = np.random.default_rng(2).integers(0, 11, (2, 100))
    with torch.inference_mode():
        expected = model(torch.from_numpy(ids))[0].numpy()  # (2, 100, V)
    parts = list(cells.CELLS[cell].STATE)
    for table in (True, False):
        monkeypatch.setattr("charlstm.generate.numpy_engine.MAX_TABLE", 1 << 24 if table else 0)
        session = ort.InferenceSession(onnx_bytes(portable), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["token", *parts]
        assert [o.name for o in session.get_outputs()] == ["logits", *[f"{p}_out" for p in parts]]
        stepper = NumpyStepper(portable)
        state = {n: np.zeros((2, 2, 16), np.float32) for n in parts}
        for t in range(100):
            logits, *new = session.run(None, {"token": ids[:, t], **state})
            state = dict(zip(parts, new, strict=True))
            err = f"{cell} step {t} table {table}"
            np.testing.assert_allclose(logits, expected[:, t], atol=1e-4, err_msg=err)
            np.testing.assert_allclose(logits, stepper.step(ids[:, t]), atol=1e-4, err_msg=err)


def test_cli_writes_an_onnx_file(run_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    r = CliRunner().invoke(app, ["export", str(run_dir), "--onnx", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "h_out", "c_out"]


# ----------------------------------------------------------------------------- JavaScript


def _node_script(cases: list[dict]) -> str:
    return textwrap.dedent(f"""
        const C = require({json.dumps(str(REPO / "charlstm" / "export" / "playground.js"))});
        const cases = {json.dumps(cases)};
        const out = [];
        for (const c of cases) {{
          const model = new C.Model(c.meta, C.decodeWeights(c.weights, c.meta.tensors));
          const rows = [Array.from(model.prime(c.ids.slice(0, c.prime)))];
          for (let t = c.prime; t < c.ids.length; t++) rows.push(Array.from(model.step(c.ids[t])));
          const picks = c.choices.map(([logits, cfg, u]) => C.choose(logits, cfg, u));
          out.push({{logits: rows, picks}});
        }}
        process.stdout.write(JSON.stringify(out));
    """)


@pytest.mark.skipif(NODE is None and not IN_CI, reason="needs Node")
def test_javascript_step_and_choice_match_python_under_node(tmp_path):
    """playground.js under Node: for every cell (the Mogrifier with 5 rounds and with 1), the
    probabilities after a prime and at each of 200 steps equal the training model's to 1e-4;
    and its choice rule picks choice.py's token for the same logits and draw (temperature,
    top-k, top-p)."""
    import base64

    from charlstm.export.playground import page_meta, weights_blob

    rng = np.random.default_rng(3)
    choices = []
    for _ in range(300):
        logits = rng.normal(0, 3, 11)
        cfg = {"temperature": float(rng.choice([0, 0.5, 1.0, 1.7])),
               "topK": int(rng.choice([0, 3])), "topP": float(rng.choice([1.0, 0.8]))}  # fmt: skip
        choices.append([logits.tolist(), cfg, float(rng.random())])
    cases, expected = [], []
    models = [(c, {}) for c in ALL_CELLS] + [("mogrifier", {"mogrifier_rounds": 1})]
    for cell, extra in models:
        model, portable = _portable(cell, **extra)
        blob, tensors = weights_blob(portable)
        ids = rng.integers(0, 11, 220)
        cases.append({"meta": page_meta(portable, tensors), "ids": ids.tolist(), "prime": 20,
                      "weights": base64.b64encode(blob).decode(), "choices": choices})  # fmt: skip
        expected.append(_probs(_torch_logits(model, ids))[19:])
    script = tmp_path / "check.js"
    script.write_text(_node_script(cases), encoding="utf-8")
    out = subprocess.run([NODE or "node", str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    for (cell, _), result, want in zip(models, results, expected, strict=True):
        np.testing.assert_allclose(_probs(np.array(result["logits"])), want, atol=1e-4,
                                   err_msg=cell)  # fmt: skip
    python_picks = [int(choose(np.array([lg]), SampleConfig(temperature=c["temperature"],
                    top_k=c["topK"], top_p=c["topP"]), np.array([u]))[0])
                    for lg, c, u in choices]  # fmt: skip
    assert results[0]["picks"] == python_picks


# ----------------------------------------------------------------------------- the page


def _chromium(tmp: Path, url: str, *args: str) -> str:
    """Headless Chromium with this machine's flags (no network, fresh profile); stdout."""
    cmd = [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={tmp / 'profile'}", "--window-size=1000,760", *args, url]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _body_data(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    return {k: html.unescape(v) for k, v in re.findall(r'data-([a-z-]+)="([^"]*)"', body[1])}


@pytest.fixture(scope="module")
def page(run_dir: Path) -> Path:
    page = run_dir.parent / "play.html"
    r = CliRunner().invoke(app, ["export", str(run_dir), "--html", str(page)])
    assert r.exit_code == 0, r.output
    return page


@pytest.mark.skipif(CHROMIUM is None and not IN_CI, reason="needs chromium (.ci/run installs it)")
def test_page_greedy_text_equals_charlstm_sample_in_chromium(run_dir, page, tmp_path):
    """The page, opened from disk in headless Chromium (no network), generates from three
    primes greedily: the first 200 characters of each equal `charlstm sample --greedy`. The
    page holds no external reference and weighs at most 1.5× its weights plus its code."""
    from urllib.parse import urlencode

    primes = ["ROMEO:", "JULIET:\nO", "What's in a"]
    query = urlencode([("run", "sync"), ("greedy", "1"), ("length", "200")]
                      + [("prime", p) for p in primes])  # fmt: skip
    data = _body_data(_chromium(tmp_path, f"{page.as_uri()}?{query}", "--dump-dom"))
    assert data.get("state") == "done", data
    runner = CliRunner()
    for prime, text in zip(primes, json.loads(data["results"]), strict=True):
        r = runner.invoke(app, ["sample", "-m", str(run_dir), "--greedy", "-n", "200",
                                "--prime", prime, "--no-echo-prime", "-q"])  # fmt: skip
        assert r.exit_code == 0, r.output
        assert text == r.stdout, prime
    source = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", source)
    assert "fetch(" not in source and "XMLHttpRequest" not in source
    weights = read_portable(run_dir / "model.safetensors").num_bytes
    code = len((REPO / "charlstm" / "export" / "playground.js").read_bytes()) + len(
        (REPO / "charlstm" / "export" / "playground.html").read_bytes()
    )
    assert page.stat().st_size <= 1.5 * weights + 2 * code


@pytest.mark.skipif(CHROMIUM is None and not IN_CI, reason="needs chromium (.ci/run installs it)")
@pytest.mark.parametrize("cell", ALL_CELLS)
def test_every_cells_page_gives_sample_greedy_text_in_chromium(cell, tmp_path):
    """For every cell, a model file exported as a page: its greedy text in headless Chromium
    equals `charlstm sample --greedy` from the same model file (the numpy engine). The page
    runs the cell's traced step: its script names no cell."""
    from urllib.parse import urlencode

    model, portable = _portable(cell, hidden=24)
    # twice as large, so the greedy text moves (at 3× the Mogrifier turns chaotic: float32
    # and the page's doubles part after ~50 steps)
    weights = {k: 2 * w for k, w in portable.weights.items()}
    path = tmp_path / f"{cell}.safetensors"
    path.write_bytes(portable_bytes(weights, model.cfg, portable.tokenizer.to_dict()))
    page = tmp_path / f"{cell}.html"
    runner = CliRunner()
    r = runner.invoke(app, ["export", str(path), "--html", str(page), "-q"])
    assert r.exit_code == 0, r.output
    primes = ["abcdeabc", "kjihg", "badge", "c"]
    query = urlencode([("run", "sync"), ("greedy", "1"), ("length", "100")]
                      + [("prime", p) for p in primes])  # fmt: skip
    data = _body_data(_chromium(tmp_path, f"{page.as_uri()}?{query}", "--dump-dom"))
    assert data.get("state") == "done", data
    for prime, text in zip(primes, json.loads(data["results"]), strict=True):
        r = runner.invoke(app, ["sample", "-m", str(path), "--greedy", "-n", "100", "--prime",
                                prime, "--no-echo-prime", "-q"])  # fmt: skip
        assert r.exit_code == 0, r.output
        assert text == r.stdout, (cell, prime)  # stdout is exactly the text
    script = (REPO / "charlstm" / "export" / "playground.js").read_text(encoding="utf-8")
    assert not any(f'"{name}"' in script for name in ALL_CELLS)


@pytest.mark.skipif(CHROMIUM is None and not IN_CI, reason="needs chromium (.ci/run installs it)")
def test_page_screenshot_shows_its_controls(page, tmp_path):
    """A screenshot of the page: every control the page reports drawing lies on screen, the
    Generate button's box is filled with its colour, the prime box and output are white
    panels, and the generated text put ink into the output panel."""
    import matplotlib.image

    url = f"{page.as_uri()}?run=sync&length=400&seed=1&prime=ROMEO%3A"
    layout = json.loads(_body_data(_chromium(tmp_path, url, "--dump-dom"))["layout"])
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, url, f"--screenshot={shot}")
    img = (matplotlib.image.imread(shot)[..., :3] * 255).round()  # (760, 1000, 3)
    height, width, _ = img.shape
    for name, (x, y, w, h) in layout.items():
        if name == "out":  # the text panel grows with the text: its top must show
            h = min(h, height - y)
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height, name
        layout[name] = [x, y, w, h]

    def inside(name: str) -> np.ndarray:
        x, y, w, h = layout[name]
        return img[y + 4 : y + h - 4, x + 4 : x + w - 4].reshape(-1, 3)

    accent = np.array([0x24, 0x57, 0xC5])
    near = np.abs(inside("generate") - accent).max(axis=1) < 24
    assert near.mean() > 0.6, "the Generate button is not drawn in its colour"
    for panel in ("prime", "out"):
        assert (inside(panel).min(axis=1) > 200).mean() > 0.5, panel
    assert (inside("out").max(axis=1) < 160).mean() > 0.003, "no text in the output panel"


@pytest.mark.skipif(CHROMIUM is None and not IN_CI, reason="needs chromium (.ci/run installs it)")
def test_page_url_cannot_run_an_uncapped_loop(page, tmp_path):
    """Every value the page reads from its URL is capped as the form caps it (length, temp,
    top_p, seed, the primes and their number), and a run the URL asks for works at most ~2 s
    at once, then in slices: `?run=sync&length=1e9` froze the page in a loop of 10^9 steps."""
    from urllib.parse import urlencode

    long = "ROMEO:" * 2000  # 12,000 characters: the form takes 10,000
    query = urlencode([("run", "sync"), ("length", "1e9"), ("temp", "1e9"), ("top_p", "-3"),
                       ("seed", "-5"), ("prime", long)] + [("prime", "R")] * 19)  # fmt: skip
    data = _body_data(_chromium(tmp_path, f"{page.as_uri()}?{query}", "--dump-dom"))
    settings = json.loads(data["settings"])
    assert (settings["length"], settings["temperature"], settings["topP"], settings["seed"],
            settings["primes"], len(settings["prime"])) == (1_000_000, 2, 0.05, 0, 16, 10_000)
    assert data["state"] in ("running", "done")  # (it goes on in slices after the page loads)
    # garbage gives the form's defaults, not NaN
    query = urlencode([("run", "sync"), ("length", "x"), ("temp", "NaN"), ("top_p", ""),
                       ("seed", "99999999999"), ("prime", "ROMEO:")])  # fmt: skip
    data = _body_data(_chromium(tmp_path, f"{page.as_uri()}?{query}", "--dump-dom"))
    settings = json.loads(data["settings"])
    assert (settings["length"], settings["temperature"], settings["topP"],
            settings["seed"]) == (1, 0.8, 1, 2**31 - 1)
    assert data["state"] == "done" and len(json.loads(data["results"])[0]) == 1


class _DevTools:
    """Chromium driven over the DevTools protocol on a pipe (fds 3 and 4): no port, no npm."""

    def __init__(self, tmp: Path, url: str) -> None:
        to_chrome, self._out = os.pipe()  # chromium reads commands on its fd 3
        self._in, from_chrome = os.pipe()  # and writes replies and events on its fd 4

        def fds() -> None:
            os.dup2(to_chrome, 3)
            os.dup2(from_chrome, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--remote-debugging-pipe",
             f"--user-data-dir={tmp / 'profile-cdp'}", "--window-size=1000,760", url],
            # dup2 makes fds 3 and 4 inheritable; every other fd Python opened is close-on-exec
            close_fds=False, preexec_fn=fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_chrome)
        os.close(from_chrome)
        self._id, self._buffer, self.session = 0, b"", None
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"],
                                 flatten=True)["sessionId"]  # fmt: skip

    def call(self, method: str, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 16)
                assert chunk, "chromium closed the pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                assert "error" not in reply, reply
                return reply["result"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close")
        finally:
            self.proc.wait(timeout=30)
            os.close(self._out)
            os.close(self._in)


@pytest.mark.skipif(CHROMIUM is None and not IN_CI, reason="needs chromium (.ci/run installs it)")
def test_page_streams_text_as_it_is_made_and_stops(page, tmp_path):
    """Used as a person uses it: type a prime, press Generate; the text grows while it is made
    (several reads, each longer), the status shows characters per second, Stop halts it and
    gives Generate back; the text starts with the prime."""
    import time

    browser = _DevTools(tmp_path, page.as_uri())
    try:
        deadline = time.time() + 30
        ready = "!!(document.body && document.body.dataset.layout)"  # the page's script ran
        while not browser.js(ready) and time.time() < deadline:
            time.sleep(0.05)
        browser.js("""document.getElementById('prime').value = 'ROMEO:';
                      document.getElementById('length').value = '1000000';
                      document.getElementById('generate').click();""")
        sizes = []
        for _ in range(4):
            time.sleep(0.3)
            sizes.append(browser.js("document.getElementById('out').textContent.length"))
        assert sizes == sorted(sizes) and sizes[0] > 6 and sizes[-1] > sizes[0], sizes
        assert browser.js("document.getElementById('generate').disabled") is True
        assert "characters/second" in browser.js("document.getElementById('status').textContent")
        browser.js("document.getElementById('stop').click()")
        stopped = browser.js("document.getElementById('out').textContent")
        time.sleep(0.3)
        assert browser.js("document.getElementById('out').textContent") == stopped
        assert stopped.startswith("ROMEO:") and len(stopped) < 1_000_006
        assert browser.js("document.getElementById('generate').disabled") is False
    finally:
        browser.close()
