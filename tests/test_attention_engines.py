"""--attention under the commands (#30): a tiny LSTM with the SHA-RNN block trained through the
CLI, then torch and numpy give the same text (-N too), the server's loop gives sample's text,
a step costs the same at 1,000 and 20,000 characters in, the Python API trains and evaluates
it, and the page, ONNX and the compressor refuse it in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from charlstm.cli import app
from tests.conftest import PLAY
from tests.test_every_cell import (  # run here on this module's `run`: a model with attention
    cli,
    runner,
    sample,
    test_the_servers_decode_loop_gives_samples_text_for_a_seed,  # noqa: F401
    test_torch_and_numpy_give_the_same_text_for_a_seed,  # noqa: F401
)

MEMORY = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("attention")
    (root / "play.txt").write_text(PLAY, encoding="utf-8")
    cli("train", str(root / "play.txt"), "--hidden", "16", "--layers", "2", "--attention",
        str(MEMORY), "--lr", "3e-2", "--steps", "40", "--eval-every", "40", "-b", "8", "-t", "16",
        "--threads", "1", "--checkpoints", str(root / "ck"), "--name", "a", "--json")  # fmt: skip
    return root / "ck" / "a"


def test_several_samples_match_between_engines(run: Path) -> None:
    """-N keeps its rows' memories apart (the loop's repeat/pick/cat over the state's parts)."""
    args = ("--seed", "3", "--length", "60", "-N", "3", "--temp", "1.0")
    text = sample(run, "--engine", "torch", *args)
    assert sample(run, "--engine", "numpy", *args) == text
    assert len(set(text.split("\n\n"))) > 1


def test_runs_lists_the_head_with_the_shape(run: Path) -> None:
    import json

    rows = [json.loads(line) for line in cli("runs", "--checkpoints", str(run.parent),
                                             "--json").splitlines()]  # fmt: skip
    assert [r["model"] for r in rows] == [f"lstm 2×16 + attention {MEMORY}"]


def test_the_page_onnx_and_the_compressor_refuse_in_one_line(run: Path, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text(PLAY[:200], encoding="utf-8")
    for args, says in [
        (["export", str(run), "--onnx", str(tmp_path / "m.onnx")], "the ONNX graph"),
        (["export", str(run), "--html", str(tmp_path / "p.html")], "the page"),
        (["compress", str(tmp_path / "in.txt"), "-m", str(run)], "compress"),
    ]:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        assert says in r.stderr and "--attention" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "p.html").exists()


def _steps(stepper, n: int) -> None:  # noqa: ANN001
    for t in np.random.default_rng(0).integers(0, stepper.vocab_size, n):
        stepper.step(np.array([t]))


def test_a_step_costs_the_same_at_1000_and_20000_characters_in(run: Path) -> None:
    """The memory is a rolling buffer: its shape, and the arithmetic of a step (torch's
    FLOP count), are the same 1,000 and 20,000 characters in. (The timing is in
    benchmarks/sample_speed.py.)"""
    from torch.utils.flop_counter import FlopCounterMode

    import charlstm

    model = charlstm.load(run)
    numpy_stepper, torch_stepper = model.stepper(), model.stepper(model.net)

    def flops() -> int:
        with FlopCounterMode(display=False) as count:
            torch_stepper.step(np.array([1]))
        return count.get_total_flops()

    counts, shapes = [], []
    for at in (1_000, 20_000):
        _steps(numpy_stepper, at - (0 if not shapes else 1_000))
        _steps(torch_stepper, at - (0 if not counts else 1_000))
        counts.append(flops())
        shapes.append([p.shape for p in numpy_stepper.state()])
        assert torch_stepper.state()[-1].shape == (MEMORY, 1, 16)
    with FlopCounterMode(display=False) as block:  # the block's own share of a step
        torch_stepper.steps.attend(torch.zeros(1, 1, 16), torch.ones(MEMORY, 1, 16))
    assert counts[0] == counts[1] and block.get_total_flops() >= 2 * 2 * (MEMORY + 1) * 16
    assert counts[0] > block.get_total_flops()  # counted within the step
    assert shapes[0] == shapes[1] and shapes[0][-1] == (MEMORY, 1, 16)


def test_the_python_api_trains_samples_and_evaluates_with_attention(tmp_path: Path) -> None:
    import charlstm

    (tmp_path / "play.txt").write_text(PLAY, encoding="utf-8")
    summary = charlstm.train([str(tmp_path / "play.txt")], attention=6, hidden=16, layers=1,
                             steps=10, batch_size=4, window=16, threads=1, name="api",
                             checkpoints=tmp_path / "ck")  # fmt: skip
    model = charlstm.load(summary["run_dir"])
    assert model.net.cfg.attention == 6 and model.net.attend is not None
    assert len("".join(model.generate("ROMEO:", length=30, seed=1))) == 30
    streams = model.evaluate(PLAY[:600], streams=4).loss
    assert streams == pytest.approx(model.evaluate(PLAY[:600], streams=1).loss, rel=1e-5)
    assert model.evaluate(PLAY[:600], streams=1, dynamic=True).loss < 10
    with torch.no_grad():
        assert all(torch.isfinite(p).all() for p in model.net.attend.parameters())


def test_visualize_shows_where_the_head_looks(run: Path, tmp_path: Path) -> None:
    """--kind attention: for each character its best earlier sources, within the memory, with
    the weights the block gave them (they and the character's own weight sum to at most 1);
    the page lights them up; a model without attention is refused in one line."""
    import json

    text = PLAY[:60]  # characters the model knows
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    out = cli("visualize", "-m", str(run), "--kind", "attention", str(tmp_path / "t.txt"),
              "--format", "json", "--html", str(tmp_path / "f.html"), "-q")  # fmt: skip
    rows = [json.loads(line) for line in out.splitlines()]
    assert "".join(r["char"] for r in rows) == text
    assert rows[0]["looks_at"] == [] and rows[0]["self"] == pytest.approx(1.0)
    for r in rows[1:]:
        assert 1 <= len(r["looks_at"]) <= 3
        assert all(r["position"] - MEMORY <= s["position"] < r["position"] for s in r["looks_at"])
        assert all(s["char"] == text[s["position"]] for s in r["looks_at"])
        assert r["self"] + sum(s["weight"] for s in r["looks_at"]) <= 1.0 + 1e-3
    page = (tmp_path / "f.html").read_text(encoding="utf-8")
    assert page.count("<span id=") == len(text) and "onmouseover" in page
    plain = tmp_path / "plain"
    cli("train", str(tmp_path / "t.txt"), "--hidden", "8", "--layers", "1", "--steps", "2", "-b",
        "2", "-t", "8", "--threads", "1", "--checkpoints", str(plain), "--name", "p")  # fmt: skip
    r = runner.invoke(app, ["visualize", "-m", str(plain / "p"), "--kind", "attention",
                            str(tmp_path / "t.txt")])  # fmt: skip
    assert r.exit_code == 2 and "--attention" in r.stderr and "Traceback" not in r.output
    # Flags that pick a unit are refused with --kind attention, not ignored.
    r = runner.invoke(app, ["visualize", "-m", str(run), "--kind", "attention", "--unit", "3",
                            str(tmp_path / "t.txt")])  # fmt: skip
    assert r.exit_code == 2 and "--unit picks a unit" in r.stderr and r.stdout == ""


@pytest.mark.parametrize("memory", [5, 300])
def test_focus_window_by_window_is_the_one_window_reading(memory: int) -> None:
    """visualize reads long texts window by window (memory linear in the length, not
    quadratic); the sources and weights are those of one window over the whole text."""
    from charlstm.evaluation.focus import focus
    from charlstm.model.language_model import LanguageModel, ModelConfig

    torch.manual_seed(4)
    model = LanguageModel(ModelConfig(vocab_size=9, hidden_size=16, num_layers=1,
                                      attention=memory)).eval()  # fmt: skip
    ids = torch.from_numpy(np.random.default_rng(4).integers(0, 9, size=700))
    got = focus(model, ids, top=3)
    with torch.no_grad():  # the reference: the whole text as one window, its T × T weights
        out, _ = model._layers(model.embed(ids.view(1, -1)), None)
        _, _, w = model.attend(out, None, weights=True)
    seen = w[0, :, memory:].double().numpy()
    earlier = np.tril(seen, k=-1)
    assert np.allclose(got.itself, np.diag(seen), atol=1e-6)
    ref = -np.sort(-earlier, axis=1)[:, :3]
    assert np.allclose(got.weights, ref, atol=1e-6)
    picked = np.take_along_axis(earlier, got.sources, axis=1)  # where the shown ones point
    shown = got.weights > 1e-4
    assert np.allclose(picked[shown], got.weights[shown], atol=1e-6)
    assert (got.sources[shown] >= np.arange(700)[:, None].repeat(3, 1)[shown] - memory).all()


def test_focus_sources_stay_inside_the_text_when_a_window_is_narrower_than_top() -> None:
    """M = 1 and 257 characters: the last window (one character) has two columns for three
    sources; the padding has weight 0 and a position inside the text."""
    from charlstm.evaluation.focus import focus
    from charlstm.model.language_model import LanguageModel, ModelConfig

    torch.manual_seed(5)
    model = LanguageModel(ModelConfig(vocab_size=9, hidden_size=8, num_layers=1, attention=1))
    got = focus(model.eval(), torch.randint(0, 9, (257,)), top=3)
    assert got.sources.shape == (257, 3) and got.sources.min() >= 0 and got.sources.max() < 257
    assert (got.weights[:, 1:] == 0).all()  # one earlier position is all a memory of 1 holds
