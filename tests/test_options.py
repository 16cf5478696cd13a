"""Each option declared once: `charlstm train`'s parameters are generated from TrainOptions, and
every default a help states is rendered from the configs and presets, never typed by hand."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields

from typer.main import get_command
from typer.testing import CliRunner

from charlstm import options
from charlstm.cli import app
from charlstm.config import DEFAULT_VOCAB, TOKENIZER_PRESETS, ModelConfig, TrainConfig
from charlstm.options import FINE_TUNE_PRESET, TrainOptions, default_of, help_text, shown

runner = CliRunner()


def _train_help() -> str:
    text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).stdout
    return re.sub(r"[\s│]+", " ", text)


def test_every_train_option_is_a_parameter_and_in_the_help():
    train = get_command(app).commands["train"]
    params = {p.name for p in train.params}
    text = _train_help()
    for f in fields(TrainOptions):
        assert f.name in params, f.name
        if f.name != "corpus":  # the argument, shown as CORPUS...
            assert "--" + f.name.replace("_", "-") in text, f.name
    assert {"quiet", "json_out"} <= params  # the command's own, besides the options


def test_help_defaults_are_rendered_from_the_configs_and_presets():
    by_name = {f.name: f for f in fields(TrainOptions)}
    # Each config default and preset value, as the help shows it, is in the rendered help and
    # not in the hand-written part of it.
    for f in fields(TrainOptions):
        rendered, written = help_text(f), f.metadata["help"]
        into = f.metadata["into"]
        values = [p[f.name] for p in (*TOKENIZER_PRESETS.values(), FINE_TUNE_PRESET)
                  if f.name in p and p[f.name] != default_of(f)]  # fmt: skip
        if into and f.metadata["says"] != "":
            values.append(default_of(f))
        for value in values:
            if value is None or isinstance(value, bool | str) or value == 0:
                continue  # numbers only ("sgd" may be named), and "0 = never" says what 0 means
            assert shown(value) in rendered, (f.name, value)
            assert not re.search(rf"(?<![\w.]){re.escape(shown(value))}(?![\w.])", written), (
                f"{f.name}: the help types {shown(value)} by hand"
            )
    batch = help_text(by_name["batch_size"])
    assert f"Default: {TrainConfig.batch_size}; word: 20; bpe: 8." in batch
    assert f"{ModelConfig.hidden_size} without one" in help_text(by_name["hidden"])
    assert shown(DEFAULT_VOCAB["word"]) in help_text(by_name["vocab_size"])


def test_a_changed_default_changes_the_help(monkeypatch):
    """Nothing is copied: change a preset and the help follows."""
    f = next(f for f in fields(TrainOptions) if f.name == "clip")
    monkeypatch.setitem(TOKENIZER_PRESETS["bpe"], "clip", 0.5)
    assert "bpe: 0.5" in help_text(f)
    monkeypatch.setitem(options.FINE_TUNE_PRESET, "clip", 0.75)
    assert "fine-tuning: 0.75" in help_text(f)


def test_into_replaces_the_rename_tables():
    opts = TrainOptions(corpus=["x"], hidden=64, layers=3, embed=32, warmup=7, lr=1e-3)
    assert opts.model_fields() == {"hidden_size": 64, "num_layers": 3, "embed_size": 32}
    assert opts.train_fields() == {"warmup_steps": 7, "lr": 1e-3}
    names = {f.name for f in fields(ModelConfig)} | {f.name for f in fields(TrainConfig)}
    for f in fields(TrainOptions):
        into = f.metadata["into"]
        assert into is None or into.split(".")[1] in names, f.name


def test_train_help_imports_no_torch():
    code = ("import sys; from charlstm.cli import app; from typer.main import get_command; "
            "get_command(app); print('torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_shared_option_reads_the_same_in_every_command():
    """--model, --checkpoints, --quiet, ... are declared once (options/common.py): every command
    that offers one offers the same flags, help, default and envvar. (train, compress and
    decompress declare their own --threads: there 0 means all cores.)"""
    own_threads = {"train", "compress", "decompress"}
    seen: dict[str, tuple] = {}
    for name, command in get_command(app).commands.items():
        for p in command.params:
            if p.name not in {"model", "checkpoints", "threads", "device", "encoding", "errors",
                              "quiet"} or (p.name == "threads" and name in own_threads):
                continue
            if p.name == "model" and name in ("info", "export"):  # their MODEL argument
                continue
            got = (tuple(p.opts), p.help, p.default, p.envvar)
            assert seen.setdefault(p.name, got) == got, (name, p.name)
    assert set(seen) == {"model", "checkpoints", "threads", "device", "encoding", "errors",
                         "quiet"}  # fmt: skip
    assert seen["checkpoints"][3] == "CHARLSTM_CHECKPOINTS"


def test_the_commands_own_flags_stay_out_of_what_the_api_takes():
    """train's --quiet and --json, serve's RUNS, --device, --threads and --quiet are the
    commands' own (TrainOutput, ServeOptions): charlstm.train() and ServeConfig take none."""
    from charlstm.config import ServeConfig

    assert not {f.name for f in fields(TrainOptions)} & {"quiet", "json_out"}
    assert not {f.name for f in fields(ServeConfig)} & {"runs", "device", "threads", "quiet"}
