"""Budget-aware sizing: the rule as a pure function of measured speeds, and the CLI using it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.formats.checkpoint import read_checkpoint
from charlstm.training import sizing
from charlstm.training.sizing import Rung

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


def test_an_lstm_making_few_passes_gets_the_stronger_weight_decay():
    few, many = sizing.FEW_PASSES - 1, sizing.FEW_PASSES + 1
    assert sizing.weight_decay_for(few, "lstm", 0.1) == sizing.FEW_PASSES_WEIGHT_DECAY > 0.1
    assert sizing.weight_decay_for(many, "lstm", 0.1) == 0.1  # dropout's regime: unchanged
    assert sizing.weight_decay_for(sizing.MIN_EPOCHS - 1, "lstm", 0.1) == 0.1  # not measured
    assert sizing.weight_decay_for(few, "gru", 0.1) == 0.1  # measured for the LSTM only


def test_the_budget_sizing_sets_the_weight_decay_and_the_flag_wins(
    tmp_path, play_file, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sizing, "LADDER", (Rung(16, 1, 1e-2),))
    common = ["train", str(play_file), "--budget", "2s", "-b", "4", "-t", "16", "--threads",
              "1", "--json", "--val-fraction", "0.2"]  # fmt: skip

    def decay_of(name: str) -> float:
        return read_checkpoint(tmp_path / "checkpoints" / name / "last.pt").data[
            "train_config"]["weight_decay"]  # fmt: skip

    monkeypatch.setattr(sizing, "MIN_EPOCHS", 0.0)  # whatever this machine's speed:
    monkeypatch.setattr(sizing, "FEW_PASSES", 1e9)  # every run makes "few" passes
    few = runner.invoke(app, [*common, "--name", "few"])
    assert few.exit_code == 0, few.stderr
    assert ", weight decay 0.2, " in json.loads(few.stdout)["chosen"]
    assert decay_of("few") == sizing.FEW_PASSES_WEIGHT_DECAY
    flag = runner.invoke(app, [*common, "--name", "flag", "--weight-decay", "0.05"])
    assert ", weight decay 0.05, " in json.loads(flag.stdout)["chosen"] and decay_of("flag") == 0.05
    monkeypatch.setattr(sizing, "FEW_PASSES", 0.0)
    many = runner.invoke(app, [*common, "--name", "many"])
    assert ", weight decay 0.1, " in json.loads(many.stdout)["chosen"] and decay_of("many") == 0.1
    # An infinite decay is refused in one line (it made the loss NaN at the second step).
    bad = runner.invoke(app, [*common, "--name", "bad", "--weight-decay", "1e400"])
    assert bad.exit_code == 2 and "--weight-decay must be a number, 0 or more" in bad.stderr


def test_the_cli_sizes_a_budgeted_run_and_flags_win(tmp_path, play_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sizing, "LADDER", (Rung(16, 1, 1e-2), Rung(24, 1, 9e-3)))
    common = ["train", str(play_file), "--budget", "3s", "-b", "4", "-t", "16", "--threads",
              "1", "--json", "--val-fraction", "0.2"]  # fmt: skip
    auto = runner.invoke(app, [*common, "--name", "a"])
    assert auto.exit_code == 0, auto.stderr
    assert "sized for the budget:" in auto.stderr and "measured 1×16" in auto.stderr
    assert "no attention head (not measured to win at any budget" in auto.stderr
    chosen = json.loads(auto.stdout)["chosen"]
    assert chosen.startswith(("1×16", "1×24"))
    fixed = runner.invoke(app, [*common, "--name", "b", "--hidden", "20", "--lr", "3e-3",
                                "--attention", "12"])  # fmt: skip
    assert fixed.exit_code == 0, fixed.stderr
    assert "attention over the last 12 outputs (--attention)" in fixed.stderr
    assert json.loads(fixed.stdout)["chosen"].startswith("2×20, lr 0.003")  # flags kept
    none = runner.invoke(app, [*common, "--name", "c", "--hidden", "20", "--layers", "1",
                               "--lr", "3e-3", "--dropout", "0"])  # fmt: skip
    assert none.exit_code == 0 and "sized for the budget" not in none.stderr


runner = CliRunner()


def test_the_ladder_rates_are_the_lstms_and_most_other_cells_keep_a_quarter():
    rung = sizing.LADDER[0]
    assert sizing.cell_lr(rung, "lstm") == sizing.cell_lr(rung, "slstm") == rung.lr
    for cell in ("gru", "rnn", "peephole", "coupled", "mogrifier"):
        assert sizing.cell_lr(rung, cell) == rung.lr * sizing.OTHER_CELLS_LR_SCALE
    # Wider rungs learn more gently.
    assert [r.lr for r in sizing.LADDER] == sorted((r.lr for r in sizing.LADDER), reverse=True)


def test_a_corpus_too_small_for_the_first_rung_gets_the_largest_small_size_under_the_cap():
    small = (Rung(16, 1, 3e-2), Rung(32, 1, 3e-2), Rung(32, 2, 2e-2))
    params = {(16, 1): 100, (32, 1): 300, (32, 2): 700, (64, 2): 5000, (96, 2): 9000,
              (128, 2): 20000}  # fmt: skip
    measured: list[str] = []

    def rate(r: Rung) -> float:
        measured.append(str(r))
        return 1e6

    def pick(tokens: int) -> sizing.Choice:
        measured.clear()
        return sizing.choose(60, tokens, rate, lambda r: params[r.hidden, r.layers], LADDER, small)

    choice = pick(200)  # cap 800: 2×64 (5000) is too big; 2×32 (700) the largest under it
    assert str(choice.rung) == "2×32" and measured == ["2×32"] and "small corpus" in choice.why
    assert choice.dropout == sizing.dropout_for(choice.epochs) > 0  # many passes: dropout
    assert str(pick(50).rung) == "1×16"  # under nothing: the smallest
    assert str(pick(10_000).rung) != "2×32"  # a corpus big enough never looks at them
    assert str(sizing.choose(60, 200, rate, lambda r: params[r.hidden, r.layers], LADDER,
                             ()).rung) == "2×64"  # fmt: skip


def test_the_layout_that_learns_most_per_second_wins():
    rates = {(32, 64): 40_000.0, (16, 64): 25_000.0, (64, 64): 60_000.0, (128, 16): 50_000.0}
    worth = {(32, 64): 0.7, (16, 64): 0.85, (64, 64): 0.6, (128, 16): 0.95}
    layouts = tuple(rates)
    asked: list[tuple[int, int]] = []

    def rate(b: int, t: int) -> float:
        asked.append((b, t))
        return rates[b, t]

    # Tokens/s × worth: 28,000, 21,250, 36,000, 47,500: the many short streams.
    got = sizing.choose_layout(rate, layouts, worth)
    assert (got.batch, got.window) == (128, 16) and got.rate == 50_000
    assert "128×16 learns most per second" in got.why and got.rates["64×64"] == 60_000
    assert asked == list(layouts)  # each measured once, in order
    # Where every token is worth the same, the fastest wins; where speeds tie, the worthiest.
    assert sizing.choose_layout(rate, layouts, dict.fromkeys(layouts, 1.0)).batch == 64
    flat = sizing.choose_layout(lambda b, t: 1.0, layouts, worth)
    assert (flat.batch, flat.window) == (128, 16)
    one = sizing.choose_layout(rate, ((32, 64),), worth)
    assert (one.batch, one.window) == (32, 64) and "as given" in one.why


def test_layouts_follow_a_given_batch_or_window_and_the_corpus_size():
    every = tuple(sizing.LAYOUT_WORTH)
    assert sizing.fitting_layouts(10**9) == every and every[0] == (32, 64)
    assert sizing.fitting_layouts(10**9, batch=32) == tuple(bt for bt in every if bt[0] == 32)
    assert all(t == 64 for _, t in sizing.fitting_layouts(10**9, window=64))
    small = sizing.fitting_layouts(32 * 64 * sizing.MIN_WINDOWS_PER_EPOCH)
    assert (32, 64) in small and all(b * t <= 32 * 64 for b, t in small)
    # The measured worths rank as measured: short windows of many streams, small batches.
    w = sizing.LAYOUT_WORTH
    assert w[32, 32] > w[128, 16] > w[16, 64] > w[64, 32] > w[32, 64] > w[64, 64]


def test_the_cli_chooses_the_layout_and_a_small_size(tmp_path, play_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    big = tmp_path / "big.txt"
    big.write_text(play_file.read_text() * 10)
    monkeypatch.setattr(sizing, "LADDER", (Rung(16, 1, 1e-2),))
    monkeypatch.setattr(sizing, "LAYOUT_WORTH", {(32, 64): 1.0, (16, 64): 1.0})
    monkeypatch.setattr(sizing, "SIZING_SHARE", 0.5)  # time to compare, on a busy machine too
    common = ["train", str(big), "--budget", "3s", "--threads", "1", "--json",
              "--val-fraction", "0.2"]  # fmt: skip
    auto = runner.invoke(app, [*common, "--name", "a"])
    assert auto.exit_code == 0, auto.stderr
    assert "batch × window: measured 32×64" in auto.stderr and "16×64" in auto.stderr
    assert ", batch " in json.loads(auto.stdout)["chosen"]
    kept = runner.invoke(app, [*common, "--name", "b", "-b", "16"])
    assert json.loads(kept.stdout)["chosen"].endswith("batch 16 × window 64"), kept.stderr
    assert "measured 32×64" not in kept.stderr
    # A corpus too small for the ladder's first size: the small ladder's.
    monkeypatch.setattr(sizing, "LADDER", (Rung(512, 2, 1e-2),))
    monkeypatch.setattr(sizing, "SMALL_LADDER", (Rung(8, 1, 1e-2), Rung(12, 1, 1e-2)))
    tiny = runner.invoke(app, ["train", str(play_file), *common[2:], "--name", "c"])
    assert tiny.exit_code == 0, tiny.stderr
    assert json.loads(tiny.stdout)["chosen"].startswith("1×12") and "small corpus" in tiny.stderr


def test_a_measurement_stops_by_its_clock(monkeypatch):
    """A machine so slow that nine steps would take most of the budget: the measurement ends
    when its clock runs out, after the step it is in (#27: 54 s of a 20 s budget measuring)."""
    import time

    import torch

    from charlstm.config import ModelConfig, TrainConfig
    from charlstm.training import schedule

    calls: list[float] = []

    def slow_step(model, optimizer, scaler, x, y, state, clip, precision):
        calls.append(time.perf_counter())
        time.sleep(0.05)
        return None, state, None

    monkeypatch.setattr(schedule, "train_step", slow_step)  # sizing steps as training does
    monkeypatch.setattr(schedule, "apply_step", lambda optimizer, scaler: None)
    mc = ModelConfig(vocab_size=8, hidden_size=8, num_layers=1)
    tc = TrainConfig(batch_size=2, window=4)
    rung, cpu = Rung(8, 1, 1e-2), torch.device("cpu")
    rate = sizing.measure_rate(rung, mc, tc, cpu, "fp32", steps=9, warmup_seconds=0.0)
    assert len(calls) == 11 and rate < 2 * 4 / 0.05  # unbounded: 2 warm-up + 9 timed steps
    calls.clear()
    start = time.perf_counter()
    rate = sizing.measure_rate(rung, mc, tc, cpu, "fp32", steps=9, until=start + 0.12)
    assert len(calls) <= 4 and rate < 2 * 4 / 0.05  # the clock ended it, a step at most late
    calls.clear()
    # The clock ends a warm-up too; the last warm-up step is then the measurement.
    rate = sizing.measure_rate(rung, mc, tc, cpu, "fp32", warmup_seconds=10.0,
                               until=time.perf_counter() + 0.12)  # fmt: skip
    assert len(calls) <= 4 and rate < 2 * 4 / 0.05


def test_sizing_takes_its_share_of_the_budget_on_a_slow_machine(tmp_path, play_file, monkeypatch):
    """Every step of sizing's measuring made slow (a busy machine): it measures the first size
    until its share of the budget is spent, takes it with a note, and compares no layouts."""
    import time

    monkeypatch.chdir(tmp_path)
    big = tmp_path / "big.txt"
    big.write_text(play_file.read_text() * 10)
    monkeypatch.setattr(sizing, "LADDER", (Rung(16, 1, 1e-2), Rung(24, 1, 9e-3)))
    monkeypatch.setattr(sizing, "LAYOUT_WORTH", {(32, 64): 1.0, (16, 64): 1.0})
    monkeypatch.setattr(sizing, "MIN_EPOCHS", 0.0)  # any speed would climb: only time stops it
    real = sizing.timed_steps
    seen: list[int] = []

    def slow(step, steps, warmup_seconds, until):
        times = real(lambda: time.sleep(0.2) or step() + 0.2, steps, warmup_seconds, until)
        seen.append(len(times))
        return times

    monkeypatch.setattr(sizing, "timed_steps", slow)
    done = runner.invoke(app, ["train", str(big), "--budget", "2s", "--threads", "1", "--json",
                               "--val-fraction", "0.2", "--name", "s"])  # fmt: skip
    assert done.exit_code == 0, done.stderr
    assert seen == [1]  # one measurement, cut short in its warm-up (0.2 s: a tenth of 2 s)
    assert "no time to measure more sizes" in done.stderr
    assert "batch × window not compared" in done.stderr
    assert json.loads(done.stdout)["chosen"].startswith("1×16")


def test_threads_where_a_probe_finds_they_pay(monkeypatch):
    """All cores for batched work, unless a short probe finds fewer threads clearly faster (a
    core held by another process stalls every operation on all threads)."""
    import time

    import torch

    from charlstm import device

    before = torch.get_num_threads()
    assert device.threads_that_pay(1) == 1  # nothing to choose
    real_mm = torch.mm

    def mm_on(busy: bool):
        def mm(a, b):  # one thread's time, or ten times it on more threads where a core is busy
            time.sleep(0.001 * (10 if busy and torch.get_num_threads() > 1 else 1))
            return real_mm(a[:1], b[:, :1])

        return mm

    monkeypatch.setattr(torch, "mm", mm_on(busy=True))
    assert device.threads_that_pay(2) == 1 and device.threads_that_pay(3) == 1
    monkeypatch.setattr(torch, "mm", mm_on(busy=False))
    assert device.threads_that_pay(2) == 2 and device.threads_that_pay(3) == 3  # a tie: all
    assert torch.get_num_threads() == before  # the probe leaves the count as it found it
    monkeypatch.setattr(device, "threads_that_pay", lambda cores: 1)
    try:
        assert device.set_threads(0, streams=64) == 1 and device.set_threads(2) == 2
    finally:
        torch.set_num_threads(before)


def test_the_run_trains_at_the_layout_the_sizing_chose(tmp_path, play_file, monkeypatch):
    """The batch × window the sizing returns is the one the run trains at (a change that put
    the window given before sizing back after it trained 128 × 64 while saying 128 × 16)."""
    from dataclasses import replace

    from charlstm.training import runs

    def sized(model_cfg, train_cfg, *args):
        return model_cfg, replace(train_cfg, batch_size=8, window=24), "batch 8 × window 24"

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runs, "size_to_budget", sized)
    r = runner.invoke(app, ["train", str(play_file), "--budget", "2s", "--threads", "1",
                            "--hidden", "16", "--val-fraction", "0.2", "--name", "l"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    saved = read_checkpoint(tmp_path / "checkpoints" / "l" / "best.pt").data["train_config"]
    assert (saved["batch_size"], saved["window"]) == (8, 24)
