"""Lists of items (train --items lines, sample --items/--novel, --val-file): each item learnt
from a zero state to its end, validation items drawn at random, new items on either engine,
the bounded search for new ones, exact resume, and the bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import charlstm
from charlstm.cells import CELLS
from charlstm.cli import app
from charlstm.data.items import item_hashes, item_layout, item_rows, item_spans, known
from charlstm.data.split import split_items
from charlstm.data.tokenizer import CharTokenizer
from charlstm.device import cpu_has_bf16
from charlstm.formats.checkpoint import load_checkpoint
from charlstm.model.language_model import LanguageModel, ModelConfig

runner = CliRunner()
NAMES = ["Ada", "Bo", "Cy", "Dee", "Eve", "Flo", "Gus", "Hal", "Ivy", "Jo", "Kay", "Lu", "Mo",
         "Ned", "Oz", "Pam", "Quin", "Ray", "Sue", "Tam", "Uma", "Val", "Wes", "Xia", "Yul",
         "Zed"] * 3  # fmt: skip
SMALL = {"batch_size": 8, "window": 16, "threads": 1, "precision": "fp32", "hidden": 32,
         "layers": 1, "lr": 2e-2, "warmup": 5}  # fmt: skip


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """An item model trained on a sorted list of names, and a running-text model."""
    root = tmp_path_factory.mktemp("items")
    (root / "names.txt").write_text("\n".join(sorted(NAMES)) + "\n\n")
    (root / "text.txt").write_text("the cat sat on the mat. " * 40)
    charlstm.train(str(root / "names.txt"), items="lines", steps=150, name="names",
                   checkpoints=root / "ck", val_fraction=0.2, **SMALL)  # fmt: skip
    charlstm.train(str(root / "text.txt"), steps=5, name="text", checkpoints=root / "ck",
                   **SMALL)  # fmt: skip
    return root


def test_an_items_loss_does_not_depend_on_what_came_before_it():
    tok = CharTokenizer.train("\nabcxyz")
    ids = tok.encode("\nabc\nxyzzy\nab\n")
    starts, lengths = item_spans(ids, int(tok.encode("\n")[0]))
    assert list(lengths) == [4, 6, 3]  # the separator, then the item's tokens
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=tok.vocab_size, hidden_size=8, num_layers=1))
    # The same item in a batch of its own and after others: the same losses.
    x1, y1 = item_rows(ids, starts[2:], lengths[2:], 16)
    x3, y3 = item_rows(ids, starts, lengths, 16)
    assert (y3[2, 3:] == -100).all() and y3[2, 2] == tok.encode("\n")[0]  # it ends at \n
    with torch.no_grad():
        alone, _ = model(x1, None, y1)
        among, _ = model(x3, None, y3)
    assert torch.allclose(alone[0], among[2, :3], atol=1e-6)
    assert float(among[2, 3:].abs().sum()) == 0.0  # padding is not scored


def test_validation_items_are_drawn_at_random_not_the_tail():
    train, val = split_items(1000, 0.1, seed=3)
    assert len(val) == 100 and len(train) == 900 and not set(train) & set(val)
    assert val.min() < 500 < val.max()  # spread over the list, not its last 100
    again, _ = split_items(1000, 0.1, seed=3)
    assert (again == train).all()  # seeded: reproducible
    assert not (split_items(1000, 0.1, seed=4)[1] == val).all()


def test_an_epoch_holds_each_item_once_in_batches_of_alike_lengths():
    ids = np.array([0] + sum(([1] * (k % 7 + 1) + [0] for k in range(64)), []))
    layout, notes = item_layout(ids, 0, 8, 5, seed=1)
    order = layout.order(2)
    assert order.shape == (8, 8) and sorted(order.ravel()) == list(range(64))
    assert any("longer than the window" in n for n in notes)
    assert (layout.order(2) == order).all() and not (layout.order(3) == order).all()


def test_the_model_learns_items_and_where_they_end(home):
    ckpt = load_checkpoint(home / "ck" / "names" / "best.pt")
    assert ckpt["train_config"]["items"] == "lines"
    assert ckpt["corpus"]["items"] == len(set(NAMES))
    losses = [m["val_loss"] for m in ckpt["metrics"] if m.get("val_loss") is not None]
    assert losses[-1] < losses[0] - 0.5
    assert not ckpt["resume"]["rnn_state"] if "resume" in ckpt else True
    r = runner.invoke(app, ["sample", "-m", str(home / "ck" / "names"), "--seed", "1", "--items",
                            "40", "--temp", "0.5"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 40 and all(line and "\n" not in line for line in lines)
    # A list it learnt well: most items are its own names, whole.
    assert sum(line in NAMES for line in lines) >= 20


def test_sample_without_flags_prints_items_and_says_what_it_drew(home):
    r = runner.invoke(app, ["sample", "-m", str(home / "ck" / "names"), "--seed", "2"])
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.splitlines()) == 10  # the default count
    assert "10 items from" in r.stderr and "candidates" in r.stderr


def test_novel_items_are_new_and_never_repeated(home):
    r = runner.invoke(app, ["sample", "-m", str(home / "ck" / "names"), "--seed", "3", "--items",
                            "15", "--novel", "--temp", "1.5"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 15 and len(set(lines)) == 15
    assert not set(lines) & set(NAMES)
    drawn = int(r.stderr.split("from ")[1].split()[0].replace(",", ""))
    assert "15 new items from" in r.stderr and drawn >= 15


def test_too_few_new_items_stops_after_a_bounded_number_of_tries(home):
    r = runner.invoke(app, ["sample", "-m", str(home / "ck" / "names"), "--seed", "3", "--items",
                            "20", "--novel", "--greedy"])  # fmt: skip
    assert r.exit_code == 1
    assert len(r.stdout.splitlines()) <= 1  # greedy: one item at most, then only repeats
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("charlstm: error: only") and "1,000 candidates" in line


def test_both_engines_give_the_same_items(home):
    numpy_model = charlstm.load(home / "ck" / "names", engine="numpy")
    torch_model = charlstm.load(home / "ck" / "names", engine="torch")
    a = numpy_model.items(12, seed=5, novel=True)
    b = torch_model.items(12, seed=5, novel=True)
    assert a.items == b.items and a.drawn == b.drawn
    assert numpy_model.item_kind == "lines"
    assert charlstm.load(home / "ck" / "text").item_kind is None
    hashes = np.load(home / "ck" / "names" / "items.npy")
    assert all(known(hashes, n) for n in NAMES) and not any(known(hashes, i) for i in a.items)
    assert (hashes == item_hashes(NAMES)).all()


@pytest.mark.parametrize("args", [["--items", "3"], ["--novel"]])
def test_items_on_a_running_text_model_is_one_line_and_exit_2(home, args):
    r = runner.invoke(app, ["sample", "-m", str(home / "ck" / "text"), *args])
    assert r.exit_code == 2 and r.stdout == ""
    line = r.stderr.strip().splitlines()[-1]  # after the model's and the seed's lines
    assert r.stderr.count("error") == 1 and line.startswith("charlstm: error: --items")


@pytest.mark.parametrize("args", [["--items", "0"], ["--items", "3", "-N", "2"],
                                  ["--novel", "--prime", "Ad"]])  # fmt: skip
def test_bad_item_counts_are_one_line_and_exit_2(home, args):
    r = runner.invoke(app, ["sample", "-m", str(home / "ck" / "names"), *args])
    assert r.exit_code == 2 and r.stdout == ""
    assert "\n" not in r.stderr.strip()


def test_train_items_bad_inputs(home):
    r = runner.invoke(app, ["train", str(home / "names.txt"), "--items", "words"])
    assert r.exit_code == 2 and "--items" in r.stderr and "'lines'" in r.stderr  # the choices
    r = runner.invoke(app, ["train", str(home / "names.txt"), "--val-file", "x.txt",
                            "--val-fraction", "0.2"])  # fmt: skip
    assert r.exit_code == 2 and "--val-file" in r.stderr
    r = runner.invoke(app, ["train", str(home / "names.txt"), "--val-file",
                            str(home / "missing.txt"), "--steps", "1", "--checkpoints",
                            str(home / "ck"), "--name", "bad"])  # fmt: skip
    assert r.exit_code != 0 and "--val-file" in r.stderr and "\n" not in r.stderr.strip()


def test_val_file_validates_on_the_held_out_file(home):
    (home / "held.txt").write_text("the mat sat on the cat. " * 5)
    summary = charlstm.train(str(home / "text.txt"), val_file=str(home / "held.txt"),
                             steps=5, name="vf", checkpoints=home / "ck", **SMALL)  # fmt: skip
    ckpt = load_checkpoint(home / "ck" / "vf" / "last.pt")
    assert ckpt["corpus"]["val_file"].endswith("held.txt")
    assert ckpt["corpus"]["n_train"] == len("the cat sat on the mat. " * 40)  # no split
    assert summary["val_tokens_scored"] == len("the mat sat on the cat. " * 5) - 1


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_item_run_resumes_exactly(home, precision):
    if precision == "bf16" and not cpu_has_bf16():
        pytest.skip("this CPU has no bf16")
    common = {"items": "lines", "steps": 30, "eval_every": 10, "checkpoints": home / "ck",
              **SMALL, "precision": precision}  # fmt: skip
    corpus = str(home / "names.txt")
    charlstm.train(corpus, name=f"whole-{precision}", **common)
    polls = iter(range(1000))
    charlstm.train(corpus, name=f"cut-{precision}", should_stop=lambda: next(polls) >= 13,
                   **common)  # fmt: skip
    assert load_checkpoint(home / "ck" / f"cut-{precision}" / "last.pt")["step"] == 13
    charlstm.train(resume=home / "ck" / f"cut-{precision}", threads=1, precision=precision)
    whole = load_checkpoint(home / "ck" / f"whole-{precision}" / "last.pt")
    cut = load_checkpoint(home / "ck" / f"cut-{precision}" / "last.pt")
    assert cut["step"] == 30
    for a, b in zip(whole["metrics"][-2:], cut["metrics"][-2:], strict=True):
        assert a["step"] == b["step"] and a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    for key, value in whole["model"].items():
        assert torch.allclose(cut["model"][key], value, atol=1e-5), key


def test_info_says_it_is_an_item_model(home):
    r = runner.invoke(app, ["info", str(home / "ck" / "names"), "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["train_config"]["items"] == "lines"
    for where in ("names", "names/model.safetensors"):  # either file says so
        r = runner.invoke(app, ["info", str(home / "ck" / where)])
        assert f"items        lines: a list of {len(set(NAMES))} items" in r.stdout


@pytest.mark.parametrize("cell", list(CELLS))
def test_every_cell_learns_items_each_from_a_zero_state(home, cell):
    """Whatever layer runs the cell (torch's fused one, our own, a parallel scan), a row's
    item is read from a zero state: its losses are the same alone or among others; and both
    engines draw the same items."""
    charlstm.train(str(home / "names.txt"), items="lines", steps=4, name=f"cell-{cell}",
                   checkpoints=home / "ck", cell=cell, mogrifier_rounds=2,
                   **{**SMALL, "layers": 2, "hidden": 8})  # fmt: skip
    run = home / "ck" / f"cell-{cell}"
    model = charlstm.load(run, engine="torch")
    tok = model.tokenizer
    ids = tok.encode("\nAda\nQuin\nBo\n")
    starts, lengths = item_spans(ids, int(tok.encode("\n")[0]))
    net = model.net.eval()
    x1, y1 = item_rows(ids, starts[2:], lengths[2:], 16)
    x3, y3 = item_rows(ids, starts, lengths, 16)
    with torch.no_grad():
        alone, _ = net(x1, None, y1)
        among, _ = net(x3, None, y3)
    assert torch.allclose(alone[0], among[2, :3], atol=1e-5)
    if (run / "model.safetensors").is_file():
        numpy_items = charlstm.load(run, engine="numpy").items(5, seed=1).items
        assert model.items(5, seed=1).items == numpy_items


def test_a_budget_sizes_an_item_model(home):
    summary = charlstm.train(str(home / "names.txt"), items="lines", budget="6s", name="sized",
                             checkpoints=home / "ck", threads=1, precision="fp32")  # fmt: skip
    assert "chosen" in summary and summary["steps"] > 0
    assert load_checkpoint(home / "ck" / "sized" / "last.pt")["train_config"]["items"] == "lines"


def test_the_server_gives_n_items_for_an_empty_prompt(home):
    from charlstm.serve.server import load_models
    from tests.test_serve import complete, serving

    model = load_models([home / "ck" / "names"])["names"]
    with serving({"names": model}) as base:
        got = complete(base, model="names", prompt="", n=6, seed=4)
        ran_on = complete(base, model="names", prompt="Ad", n=1, seed=4, max_tokens=30)
    choices = got["choices"]
    assert [c["finish_reason"] for c in choices] == ["stop"] * 6
    texts = [c["text"] for c in choices]
    assert texts == model.samples(6, None, seed=4, stop="\n")  # each row one item, from the start
    assert all(t and "\n" not in t for t in texts)
    assert ran_on["choices"][0]["finish_reason"] == "length"  # a prompt: running text as before


def test_novel_items_on_the_numpy_engine_import_no_torch(home):
    code = ("import sys, charlstm; m = charlstm.load(sys.argv[1], engine='numpy'); "
            "print(len(m.items(4, seed=1, novel=True).items), 'torch' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(home / "ck" / "names")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.split() == ["4", "False"]


def test_beam_search_on_an_item_model_gives_whole_items(home):
    model = charlstm.load(home / "ck" / "names", engine="numpy")
    beams = model.beam(None, 3, 30)
    assert len(beams) == 3 and all(b.reason == "stop" for b in beams)
    assert all(b.text and "\n" not in b.text for b in beams)  # each ends at its separator
    r = runner.invoke(app, ["sample", "-m", str(home / "ck" / "names"), "--beam", "2", "--items",
                            "2"])  # fmt: skip
    assert r.exit_code == 2 and "--beam" in r.stderr and "--items" in r.stderr


def test_the_start_line_counts_items_not_streams(home, tmp_path):
    """An item model's batch is B items cut at T tokens (padding is no token): said so."""
    r = runner.invoke(app, ["train", str(home / "names.txt"), "--items", "lines", "--steps", "1",
                            "--checkpoints", str(tmp_path), "-b", "8", "-t", "16", "--hidden",
                            "16", "--threads", "1"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "8 items a step, each cut at 16 tokens" in r.stderr and "streams" not in r.stderr
