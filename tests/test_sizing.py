"""Budget-aware sizing: the rule as a pure function of measured speeds, and the CLI using it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from charlstm import sizing
from charlstm.cli import app
from charlstm.sizing import Rung

LADDER = (Rung(64, 2, 1e-2), Rung(96, 2, 8e-3), Rung(128, 2, 6e-3))


def choose(budget: float, tokens: int, rates: dict[int, float], params=lambda r: 1000):
    measured: list[int] = []

    def rate(rung: Rung) -> float:
        measured.append(rung.hidden)
        return rates[rung.hidden]

    return sizing.choose(budget, tokens, rate, params, LADDER), measured


def test_largest_size_that_still_sees_the_data_often_enough():
    rates = {64: 40_000.0, 96: 20_000.0, 128: 10_000.0}
    least = sizing.MIN_EPOCHS
    # 25 × least seconds over 1M tokens: 64 makes exactly `least` passes, 96 half as many (too
    # few): 64, and 128 is never measured.
    choice, measured = choose(25 * least, 1_000_000, rates)
    assert choice.rung.hidden == 64 and choice.epochs == pytest.approx(least)
    assert measured == [64, 96] and "96" in choice.why
    choice, _ = choose(250 * least, 1_000_000, rates)  # ten times the budget: the largest
    assert choice.rung.hidden == 128 and choice.epochs == pytest.approx(2.5 * least)
    choice, _ = choose(10_000 * least, 1_000_000, rates)  # passes enough to need dropout
    assert choice.dropout == sizing.dropout_for(choice.epochs) > 0
    choice, _ = choose(10, 1_000_000, rates)  # too short for any: the smallest
    assert choice.rung.hidden == 64 and choice.dropout == 0


def test_a_small_corpus_caps_the_size():
    rates = {64: 1e9, 96: 1e9, 128: 1e9}
    params = {64: 100, 96: 500, 128: 900}
    choice, measured = choose(100, 200, rates, params=lambda r: params[r.hidden])
    assert choice.rung.hidden == 96 and measured == [64, 96]  # 900 > 4 × 200


def test_dropout_grows_with_passes():
    drops = [sizing.dropout_for(e) for e in (1, 10, 20, 40, 1000)]
    assert drops == sorted(drops) and drops[0] == 0


def test_the_cli_sizes_a_budgeted_run_and_flags_win(tmp_path, play_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sizing, "LADDER", (Rung(16, 1, 1e-2), Rung(24, 1, 9e-3)))
    common = ["train", str(play_file), "--budget", "3s", "-b", "4", "-t", "16", "--threads",
              "1", "--json", "--val-fraction", "0.2"]  # fmt: skip
    auto = runner.invoke(app, [*common, "--name", "a"])
    assert auto.exit_code == 0, auto.stderr
    assert "sized for the budget:" in auto.stderr and "measured 1×16" in auto.stderr
    chosen = json.loads(auto.stdout)["chosen"]
    assert chosen.startswith(("1×16", "1×24"))
    fixed = runner.invoke(app, [*common, "--name", "b", "--hidden", "20", "--lr", "3e-3"])
    assert fixed.exit_code == 0, fixed.stderr
    assert json.loads(fixed.stdout)["chosen"].startswith("2×20, lr 0.003")  # flags kept
    none = runner.invoke(app, [*common, "--name", "c", "--hidden", "20", "--layers", "1",
                               "--lr", "3e-3", "--dropout", "0"])  # fmt: skip
    assert none.exit_code == 0 and "sized for the budget" not in none.stderr


runner = CliRunner()


def test_the_ladder_rates_are_the_lstms_and_other_cells_keep_a_quarter():
    rung = sizing.LADDER[0]
    assert sizing.cell_lr(rung, "lstm") == rung.lr
    for cell in ("gru", "rnn", "peephole", "coupled"):
        assert sizing.cell_lr(rung, cell) == rung.lr * sizing.OTHER_CELLS_LR_SCALE
    # Wider rungs learn more gently.
    assert [r.lr for r in sizing.LADDER] == sorted((r.lr for r in sizing.LADDER), reverse=True)
