"""What every reader of a model file checks before building anything from it, without torch:
where a run's model is (`resolve_checkpoint`), each config field's type, the model's size
against this machine's memory, the tokenizer against the vocabulary. checkpoint.py (best.pt,
last.pt) and portable.py (model.safetensors) both build on these.
"""

from __future__ import annotations

import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from charlstm.cells import CELLS, cell_options
from charlstm.cells.base import gate_count, layer_shapes
from charlstm.config import CHECKPOINTS, ModelConfig
from charlstm.data.tokenizer import AnyTokenizer, tokenizer_from_dict
from charlstm.errors import CharlstmError
from charlstm.formats.run_folder import BEST, MODEL_FILE, RunFolder

# Bias vectors per layer that the step layout sums into its b: torch's own LSTM and RNN keep an
# input and a hidden bias (training updates both); the GRU's two are stored apart (b, b_h).
SUMMED_BIASES = {"lstm": 1, "rnn": 1}


class CheckpointError(CharlstmError):
    """A checkpoint that is missing or cannot be used; the message is one line for the user."""


class SizeError(CharlstmError):
    """A model too big for this machine's memory, refused before anything is allocated."""


class Invalid(Exception):
    """One thing wrong with a file's contents; the reader turns it into a CheckpointError."""


def require(ok: bool, what: str) -> None:
    if not ok:
        raise Invalid(what)


def resolve_checkpoint(model: Path | None, root: Path = CHECKPOINTS) -> Path:
    """A checkpoint file, a run folder (its best.pt, else last.pt, else model.safetensors), or,
    with none given, the most recently written best.pt under `root`."""
    if model is None:
        found = sorted(root.glob(f"*/{BEST}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise CheckpointError(
                f"no trained model under '{root}/'; train one with `charlstm train CORPUS` "
                "or pass --model PATH"
            )
        return found[-1]
    if model.is_dir():
        found_file = RunFolder(model).checkpoint()
        if found_file is not None:
            return found_file
        runs = sorted(
            p.name for p in model.iterdir() if p.is_dir() and RunFolder(p).has_checkpoint()
        )
        if runs:
            shown = ", ".join(runs[:12]) + (f" and {len(runs) - 12} more" if len(runs) > 12 else "")
            raise CheckpointError(
                f"'{model}' is a folder of runs, not one: pick one with -m {model}/NAME "
                f"({shown}; `charlstm runs` lists them)"
            )
        raise CheckpointError(f"'{model}' holds no best.pt, last.pt or {MODEL_FILE}")
    if not model.exists():
        raise CheckpointError(f"no checkpoint at '{model}'")
    return model


def typed(value: object, kind: str) -> bool:
    """Whether `value` is of a dataclass field's declared type (as written in the source)."""
    if value is None:
        return "None" in kind
    if isinstance(value, bool):
        return kind.startswith("bool")
    if isinstance(value, int):
        return kind.startswith(("int", "float"))
    if isinstance(value, float):
        return kind.startswith("float") and math.isfinite(value)
    if isinstance(value, str):
        return kind.startswith("str")
    if isinstance(value, list):
        if not kind.startswith("list["):  # (an empty list is no int)
            return False
        inner = kind.split(" |")[0].removeprefix("list[").removesuffix("]")
        if inner.startswith("list["):
            return all(isinstance(v, list) and typed(v, inner) for v in value)
        item = {"int": int, "str": str}.get(inner)
        return item is not None and all(
            isinstance(v, item) and not isinstance(v, bool) for v in value
        )
    return False


def number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def config_from_dict(cls: type, d: object, name: str) -> Any:
    """An instance of the config dataclass `cls` from a file's dict, every field typed."""
    require(isinstance(d, dict), f"{name} is {type(d).__name__}, not a dict")
    assert isinstance(d, dict)
    known = {f.name: f.type for f in fields(cls)}
    for key, value in d.items():
        require(key in known, f"{name} has an unknown field {key!r}")
        require(typed(value, str(known[key])), f"{name}.{key} = {value!r} is not a {known[key]}")
    try:
        return cls(**d)
    except (TypeError, ValueError) as e:
        raise Invalid(f"{name}: {e}") from None


def parameter_count(cfg: ModelConfig) -> int:
    """The parameters a model of `cfg` trains (LanguageModel.num_parameters: a tied matrix
    counted once), computed without building it: the one count `info` shows for a checkpoint
    and for a model file, whose summed biases hold fewer numbers."""
    cell, h, e, v = CELLS[cfg.cell], cfg.hidden_size, cfg.embed_size, cfg.vocab_size
    shapes = [layer_shapes(cell, e if k == 0 else h, h, **cell_options(cfg))
              for k in range(cfg.num_layers)]  # fmt: skip
    layers = sum(math.prod(shape) for layer in shapes for shape in layer.values())
    layers += cfg.num_layers * gate_count(cell) * h * SUMMED_BIASES.get(cfg.cell, 0)
    return v * e + layers + (0 if cfg.tie_weights else v * h) + v + attention_parameters(cfg)


def attention_parameters(cfg: ModelConfig) -> int:
    """--attention's block (model/attention.py): five layer norms, W_q, three gates, the value
    gate's Overparam (H → 2H) and the Boom (H → 4H)."""
    h = cfg.hidden_size
    block = 10 * h + (h * h + h) + 3 * h + (2 * h * h + 2 * h) + (4 * h * h + 4 * h)
    return block if cfg.attention else 0


def memory_bytes() -> int:
    """This machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def check_size(cfg: ModelConfig, what: str = "the model", training: bool = False) -> None:
    """Refuse, before anything is allocated, a model this machine cannot hold: its weights
    alone over half of the memory, or, to train, weights, gradients and AdamW's two moments
    over 80% of it."""
    n = parameter_count(cfg)
    need, have = (16 if training else 4) * n, memory_bytes()
    if need > (0.8 if training else 0.5) * have:
        purpose = "to train (weights, gradients, optimizer state)" if training else "of weights"
        raise SizeError(
            f"{what} ({cfg.num_layers}×{cfg.hidden_size}, vocabulary {cfg.vocab_size:,}) has "
            f"{n:,} parameters: ~{_gb(need)} {purpose}; this machine has {_gb(have)}"
        )


def _gb(n: float) -> str:
    return f"{n / 2**30:,.1f} GB" if n >= 2**30 else f"{n / 2**20:,.0f} MB"


def model_config(d: object) -> ModelConfig:
    """A file's model_config, typed, of a size this machine can hold."""
    config = config_from_dict(ModelConfig, d, "model_config")
    try:
        check_size(config, "its model")
    except SizeError as e:
        raise Invalid(str(e)) from None
    return config


def check_tokenizer(d: object, config: ModelConfig) -> AnyTokenizer:
    """The tokenizer a file's dict describes, whose vocabulary is the model's."""
    require(isinstance(d, dict), "its tokenizer is no dict")
    assert isinstance(d, dict)
    kind = d.get("kind")
    field_name = "chars" if kind == "char" else "json"
    require(kind in ("char", "word", "bpe"), f"unknown tokenizer kind {kind!r}")
    require(isinstance(d.get(field_name), str), f"the {kind} tokenizer's {field_name} is no text")
    try:
        tokenizer = tokenizer_from_dict(d)
    except (CharlstmError, ValueError) as e:
        raise Invalid(f"its tokenizer: {str(e).splitlines()[0] if str(e) else e}") from None
    require(tokenizer.vocab_size == config.vocab_size,
            f"its tokenizer has {tokenizer.vocab_size:,} tokens, the model "
            f"{config.vocab_size:,}")  # fmt: skip
    return tokenizer
