"""visualize.py: the traced activations match the model, properties, unit ranking, rendering."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest
import torch

from charlstm.config import CELLS
from charlstm.evaluation.visualize import (
    find_units,
    normalise,
    properties,
    render_html,
    render_terminal,
    trace,
)
from charlstm.model.language_model import LanguageModel, ModelConfig

TEXT = 'He said "stop (now)" and\nshe didn\'t.\n'


def _model(cell: str, layers: int = 2, hidden: int = 16, vocab: int = 12) -> LanguageModel:
    torch.manual_seed(0)
    net = LanguageModel(ModelConfig(vocab_size=vocab, cell=cell, hidden_size=hidden,
                                    num_layers=layers, embed_size=8))  # fmt: skip
    return net.eval()


def _ids(t: int = 40, vocab: int = 12) -> torch.Tensor:
    return torch.randint(0, vocab, (t,), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layer", [0, -1])
def test_trace_hidden_matches_model(cell: str, layer: int) -> None:
    net, ids = _model(cell), _ids()
    acts = trace(net, ids, layer=layer)
    if layer == 0:  # torch only returns the top layer: compare with a one-layer copy
        net = _model(cell, layers=1)
        net.load_state_dict({k: v for k, v in _model(cell).state_dict().items() if "l1" not in k})
    with torch.no_grad():
        out, _ = net.rnn(net.embed(ids[None]))  # (1, T, H)
    np.testing.assert_allclose(acts["hidden"], out[0].numpy(), atol=1e-5)
    expected = {
        "lstm": {"hidden", "cell", "forget", "input", "output"},
        "peephole": {"hidden", "cell", "forget", "input", "output"},
        "coupled": {"hidden", "cell", "forget", "input", "output"},
        "mogrifier": {"hidden", "cell", "forget", "input", "output"},
        "slstm": {"hidden", "cell", "normalizer", "stabilizer", "forget", "input", "output"},
        "gru": {"hidden", "update", "reset"},
        "rnn": {"hidden"},
        "mingru": {"hidden", "update"},
        "minlstm": {"hidden", "forget", "input"},
    }[cell]
    assert set(acts) == expected
    assert all(a.shape == (len(ids), 16) for a in acts.values())


@pytest.mark.parametrize("cell", ["lstm", "peephole", "coupled", "mogrifier"])
def test_trace_cell_update_holds(cell: str) -> None:
    """c_t − f ⊙ c_{t−1} = i ⊙ g, with g = tanh(...) in (−1, 1): check the recorded gates."""
    acts = trace(_model(cell), _ids())
    c, f, i, o, h = (acts[k] for k in ("cell", "forget", "input", "output", "hidden"))
    c_prev = np.vstack([np.zeros((1, c.shape[1])), c[:-1]])
    g = (c - f * c_prev) / i
    assert np.all(np.abs(g) < 1 + 1e-4)
    np.testing.assert_allclose(h, o * np.tanh(c), atol=1e-5)
    if cell == "coupled":
        np.testing.assert_allclose(i, 1 - f, atol=1e-6)


def test_trace_slstm_states_and_gates_hold() -> None:
    """The sLSTM's recorded gates are its stabilised ones (in [0, 1], one of them 1 at every
    step), c and n follow them, and h = o ⊙ c / n."""
    acts = trace(_model("slstm"), _ids())
    c, n, f, i, o, h = (acts[k] for k in ("cell", "normalizer", "forget", "input", "output",
                                          "hidden"))  # fmt: skip
    # From the fresh state of step 0 on (m_0 = ĩ_0: i' = 1, and f' multiplies nothing).
    assert (i >= 0).all() and (i <= 1 + 1e-6).all() and i[0] == pytest.approx(1.0)
    assert (f[1:] >= 0).all() and (f[1:] <= 1 + 1e-6).all()
    np.testing.assert_allclose(np.maximum(f[1:], i[1:]), 1.0, atol=1e-6)
    n_prev = np.vstack([np.zeros((1, n.shape[1])), n[:-1]])
    np.testing.assert_allclose(n, f * n_prev + i, rtol=1e-5)
    c_prev = np.vstack([np.zeros((1, c.shape[1])), c[:-1]])
    z = (c - f * c_prev) / i
    assert np.all(np.abs(z) < 1 + 1e-4) and (n >= 1 - 1e-6).all()
    np.testing.assert_allclose(h, o * c / n, atol=1e-5)


def test_trace_lstm_gates_from_torch_weights() -> None:
    """Rebuild g from torch's (i, f, g, o) blocks at step 0 and check c_0 = i ⊙ g exactly."""
    net, ids = _model("lstm", layers=1), _ids()
    acts = trace(net, ids)
    with torch.no_grad():
        x = net.embed(ids[:1])  # (1, E)
        z = x @ net.rnn.weight_ih_l0.T + net.rnn.bias_ih_l0 + net.rnn.bias_hh_l0  # h_0 = 0
        i, f, g, o = z[0].chunk(4)
    np.testing.assert_allclose(acts["input"][0], torch.sigmoid(i).numpy(), atol=1e-6)
    np.testing.assert_allclose(acts["forget"][0], torch.sigmoid(f).numpy(), atol=1e-6)
    np.testing.assert_allclose(acts["output"][0], torch.sigmoid(o).numpy(), atol=1e-6)
    c0 = torch.sigmoid(i) * torch.tanh(g)  # c_{-1} = 0
    np.testing.assert_allclose(acts["cell"][0], c0.numpy(), atol=1e-6)


def test_trace_rejects_bad_layer() -> None:
    with pytest.raises(ValueError, match="out of range"):
        trace(_model("lstm"), _ids(), layer=2)


def test_properties() -> None:
    p = properties(TEXT)
    assert all(len(v) == len(TEXT) and v.dtype == np.float64 for v in p.values())

    def marked(name: str) -> str:
        return "".join(ch for ch, v in zip(TEXT, p[name], strict=True) if v)

    assert marked("in_quotes") == '"stop (now)"'  # the apostrophe in didn't opens nothing
    assert marked("in_parens") == "(now)"
    assert marked("word_start") == "Hssnasd"  # didn't is one word
    assert p["line_position"][0] == 0 and p["line_position"][TEXT.index("she")] == 0
    assert p["line_position"].max() == pytest.approx(1.0)  # the longest line's newline
    quoted = "say 'hi there' to the dogs' owner"
    q = properties(quoted)
    assert "".join(ch for ch, v in zip(quoted, q["in_quotes"], strict=True) if v) == "'hi there'"
    assert q["in_parens"].sum() == 0


def test_find_units_finds_the_built_unit() -> None:
    rng = np.random.default_rng(0)
    p = properties(TEXT * 3)
    t = len(TEXT) * 3
    cell = rng.normal(size=(t, 6))
    cell[:, 4] = 0.9 * p["in_parens"] + 0.1 * rng.normal(size=t)  # unit 4 tracks brackets
    hidden = rng.normal(size=(t, 6))
    hidden[:, 2] = 3.0  # constant: skipped
    best = find_units({"cell": cell, "hidden": hidden}, p, top=3)
    assert len(best) == 3
    assert best[0]["kind"] == "cell" and best[0]["unit"] == 4
    assert best[0]["property"] == "in_parens" and best[0]["correlation"] > 0.9
    assert abs(best[0]["correlation"]) >= abs(best[1]["correlation"]) >= abs(best[2]["correlation"])
    everything = find_units({"hidden": hidden}, p, top=100)
    assert len(everything) == 5 * 4  # 6 units less the constant one, 4 properties
    assert not any(d["unit"] == 2 for d in everything)


def test_normalise_and_terminal_render() -> None:
    np.testing.assert_allclose(normalise(np.array([0.0, 0.5, 1.0]), "forget"), [-1, 0, 1])
    np.testing.assert_allclose(normalise(np.array([-4.0, 2.0]), "cell"), [-1, 0.5])
    values = np.linspace(-1, 1, len(TEXT))
    out = render_terminal(TEXT, values, kind="hidden")
    assert out.plain == TEXT.replace("\n", "↵\n")
    styles = {str(span.style) for span in out.spans}
    assert len(styles) > 5  # a range of colours, not one
    with pytest.raises(ValueError):
        render_terminal(TEXT, values[:-1])


def test_render_html_is_self_contained_and_escaped() -> None:
    text = 'a<b & "c"\nd'
    rows = [("layer 2 · cell · unit 17 · r=0.81 with in_quotes", np.linspace(-1, 1, len(text))),
            ("forget <3", np.linspace(0, 1, len(text)))]  # fmt: skip
    page = render_html(text, rows, title="cells & <tags>", kinds=["cell", "forget"])
    for bad in ("http", "src=", "<link"):
        assert bad not in page
    assert "<tags>" not in page and "cells &amp; &lt;tags&gt;" in page
    spans = re.findall(r"<span[^>]*title='(-?\d+\.\d{3})'>(.*?)</span>", page, flags=re.S)
    assert len(spans) == len(text) * len(rows)
    assert page.count("<span") == len(text) * len(rows) + 1  # + the legend's colour bar
    shown = [html.unescape(s) for _, s in spans[: len(text)]]
    assert shown == [("↵\n" if ch == "\n" else ch) for ch in text]
    raw = [s for _, s in spans[: len(text)]]
    assert raw[1] == "&lt;" and raw[3] == " " and raw[4] == "&amp;" and raw[6] == "&quot;"
    assert spans[0][0] == "-1.000" and "white-space: pre-wrap" in page
    assert "unit 17 · r=0.81 with in_quotes" in page


def test_visualize_command_find_and_html(tmp_path, play_file, monkeypatch):
    """Through the CLI: ranked units on stderr, coloured text on stdout, a self-contained page."""
    from typer.testing import CliRunner

    from charlstm.cli import app

    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    tiny = ["--hidden", "24", "--layers", "2", "-b", "4", "-t", "16", "--threads", "1"]
    trained = runner.invoke(app, ["train", str(play_file), "--steps", "30", "--name", "v", *tiny])
    assert trained.exit_code == 0, trained.stderr
    page = tmp_path / "units.html"
    r = runner.invoke(app, ["visualize", str(play_file), "--find", "--html", str(page),
                            "--max-chars", "300", "--format", "ansi"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "line_position" in r.stderr or "in_quotes" in r.stderr or "word_start" in r.stderr
    plain = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)  # --format ansi: coloured into a pipe too
    assert "layer 1 · " in plain and "ROMEO" in plain and "\x1b[" in r.stdout
    html = page.read_text()
    assert html.count("layer 1 · ") >= 1 and "http" not in html
    bad = runner.invoke(app, ["visualize", str(play_file), "--kind", "nonsense"])
    assert bad.exit_code == 2 and "--kind" in bad.stderr


def test_visualize_into_a_pipe_writes_the_values(tmp_path) -> None:
    """Not a terminal: one TSV row per character with the unit's value (or JSON lines, or the
    colours when asked for), not the plain text once per unit."""
    import json

    from typer.testing import CliRunner

    import charlstm
    from charlstm.cli import app

    text = 'He said "stop (now)"\tand\nshe didn\'t.\\\n' * 20
    (tmp_path / "t.txt").write_text(text)
    runner = CliRunner()
    r = runner.invoke(app, ["train", str(tmp_path / "t.txt"), "--steps", "5", "--hidden", "16",
                            "--layers", "1", "-b", "4", "-t", "16", "--threads", "1", "--name",
                            "v", "--checkpoints", str(tmp_path / "ck"), "-q"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    run = str(tmp_path / "ck" / "v")
    args = ["visualize", str(tmp_path / "t.txt"), "-m", run, "--max-chars", "40", "-q"]
    tsv = runner.invoke(app, [*args, "--unit", "3", "--kind", "hidden"])
    assert tsv.exit_code == 0, tsv.stderr
    rows = [line.split("\t") for line in tsv.stdout.split("\n")[:-1]]
    assert rows[0] == ["position", "char", "hidden 3"] and len(rows) == 41
    unescape = {"\\t": "\t", "\\n": "\n", "\\\\": "\\"}
    assert "".join(unescape.get(row[1], row[1]) for row in rows[1:]) == text[:40]
    assert [int(row[0]) for row in rows[1:]] == list(range(40))
    expected = charlstm.load(run).trace(text[:40]).activations["hidden"][:, 3]
    assert np.allclose([float(row[2]) for row in rows[1:]], expected, atol=1e-5)
    js = runner.invoke(app, [*args, "--format", "json", "--find"])
    assert js.exit_code == 0, js.stderr
    objects = [json.loads(line) for line in js.stdout.splitlines()]
    assert "".join(o["char"] for o in objects) == text[:40] and len(objects[0]) >= 3
    ansi = runner.invoke(app, [*args, "--format", "ansi"])
    assert ansi.exit_code == 0 and "\x1b[" in ansi.stdout and "layer 0" in ansi.stdout
