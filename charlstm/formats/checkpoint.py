"""One self-contained checkpoint file: written atomically, loaded without running pickled code.

A checkpoint is a dict of tensors and plain Python values:
    format, format_version, charlstm_version, model_config, train_config, tokenizer,
    model (state dict), metrics, corpus, step, tokens_seen, best_val_loss
and, in last.pt only, "resume": optimizer state, data position, carried state. (The random
draws of a step are a function of the seed and the step: no RNG state is needed to resume.)

Nothing is built from a file before `read_checkpoint` has checked all of it (the checks that
need no torch live in checks.py, shared with model.safetensors' reader, portable.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from charlstm import __version__
from charlstm.config import ModelConfig, TrainConfig
from charlstm.data.tokenizer import AnyTokenizer
from charlstm.data.tokens import CorpusInfo
from charlstm.files import FileWriteError, Fingerprinter, write_atomic
from charlstm.formats.checks import (  # noqa: F401  (resolve_checkpoint, check_size: re-exported)
    CheckpointError,
    SizeError,
    check_size,
    check_tokenizer,
    model_config,
    parameter_count,
    resolve_checkpoint,
)
from charlstm.formats.checks import Invalid as _Invalid
from charlstm.formats.checks import config_from_dict as _config
from charlstm.formats.checks import number as _number
from charlstm.formats.checks import require as _require
from charlstm.model.language_model import LanguageModel
from charlstm.model.layers import STATE_PARTS
from charlstm.model.weights import portable_weights

FORMAT = "charlstm"
FORMAT_VERSION = 1


def save_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    """Write a checkpoint atomically: a crash or kill at any moment leaves the old file or the
    new one, never a torn file (files.write_atomic)."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "charlstm_version": __version__}
    payload.update(ckpt)
    try:
        write_atomic(path, lambda f: torch.save(payload, f))
    except FileWriteError as e:
        raise CheckpointError(str(e)) from e


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load with weights_only=True: tensors and plain types only, never arbitrary pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at '{path}'")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # The weights-only unpickler refuses a class or function ("GLOBAL"): that is a pickle
        # that would build objects, maybe run code. Anything else is a damaged or foreign file.
        if "unsupported GLOBAL" in str(e):
            raise CheckpointError(
                f"refusing to load '{path}': it holds objects other than tensors and plain "
                f"data, so it is not a charlstm checkpoint and may run code"
            ) from e
        raise CheckpointError(f"'{path}' is truncated or not a checkpoint") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a charlstm checkpoint")
    version = ckpt.get("format_version")
    if type(version) is not int or version > FORMAT_VERSION:
        raise CheckpointError(
            f"'{path}' has checkpoint format {version}, newer than this charlstm "
            f"{__version__} reads ({FORMAT_VERSION}); upgrade charlstm"
        )
    return ckpt


# ------------------------------------------------------------------------------------ validation
#
# Everything built from a file is built from what `read_checkpoint` has checked: the types of
# every field, the model's size (before anything is allocated), every tensor's shape, dtype and
# finiteness against the config, the tokenizer against the vocabulary, and for --resume the
# training state. A file that fails any check is refused with one line saying what is wrong.

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass
class Checkpoint:
    """A checkpoint whose contents have been checked; build from it, not from the raw dict."""

    path: Path
    data: dict[str, Any]
    config: ModelConfig
    tokenizer: AnyTokenizer

    def model(self) -> LanguageModel:
        """The model it describes, with its weights, in eval mode."""
        net = LanguageModel(self.config)
        net.load_state_dict({k: v.float() for k, v in self.data["model"].items()})
        return net.eval()


def read_checkpoint(path: Path, *, resume: bool = False) -> Checkpoint:
    """Load a checkpoint (load_checkpoint) and check all of it; with `resume`, also the training
    state last.pt carries. Raises CheckpointError naming the first problem."""
    path = Path(path)
    data = load_checkpoint(path)
    try:
        return _validated(path, data, resume)
    except _Invalid as e:
        raise CheckpointError(f"'{path}' is damaged or not usable: {e}") from None


def _validated(path: Path, data: dict[str, Any], resume: bool) -> Checkpoint:
    for key in ("model_config", "tokenizer", "model"):
        _require(key in data, f"it has no {key!r}")
    config = model_config(data["model_config"])
    train_config = None
    if "train_config" in data or resume:
        train_config = _config(TrainConfig, data.get("train_config"), "train_config")
    for key, kinds in (("step", int), ("tokens_seen", int), ("metrics", list),
                       ("corpus", dict), ("best_val_loss", (int, float))):  # fmt: skip
        value = data.get(key)
        _require(value is None or (isinstance(value, kinds) and not isinstance(value, bool)),
                 f"{key} is {type(value).__name__}")  # fmt: skip
    for m in data.get("metrics") or []:
        numbers = ("train_loss", "val_loss", "val_bpc", "elapsed", "tokens_seen")
        _require(isinstance(m, dict) and isinstance(m.get("step"), int)
                 and all(m.get(k) is None or _number(m[k]) for k in numbers),
                 f"a metrics record is damaged: {repr(m)[:80]}")  # fmt: skip
    curve = data.get("train_curve") or []
    _require(isinstance(curve, list) and all(
        isinstance(p, dict) and isinstance(p.get("step"), int) and _number(p.get("train_loss"))
        for p in curve), "its training curve is damaged")  # fmt: skip
    parent = data.get("parent")
    _require(parent is None or (isinstance(parent, dict) and isinstance(parent.get("path"), str)),
             "its parent (--init-from) is damaged")  # fmt: skip
    keep = data.get("keep_eval")
    _require(keep is None or (isinstance(keep, dict) and isinstance(keep.get("chars"), int)
                              and isinstance(keep.get("tokens"), int)
                              and isinstance(keep.get("sources"), list)),
             "its keep-eval record is damaged")  # fmt: skip
    if data.get("corpus") is not None or resume:
        _config(CorpusInfo, data.get("corpus"), "corpus")
    _check_weights(data["model"], config)
    tokenizer = check_tokenizer(data["tokenizer"], config)
    if resume:
        _check_resume(data.get("resume"), config, train_config.optimizer)
    return Checkpoint(path, data, config, tokenizer)


def _expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: nothing is allocated
        return {k: tuple(v.shape) for k, v in LanguageModel(config).state_dict().items()}


def _check_weights(weights: object, config: ModelConfig) -> None:
    _require(isinstance(weights, dict), "its weights are no dict")
    assert isinstance(weights, dict)
    expected = _expected_shapes(config)
    for key, shape in expected.items():
        t = weights.get(key)
        _require(t is not None, f"the weight {key!r} is missing")
        _require(isinstance(t, torch.Tensor), f"the weight {key!r} is no tensor")
        _require(t.dtype in _FLOAT_DTYPES, f"the weight {key!r} holds {t.dtype}, not floats")
        _require(tuple(t.shape) == shape,
                 f"the weight {key!r} is {tuple(t.shape)}, the config needs {shape}")  # fmt: skip
        _require(bool(torch.isfinite(t).all()), f"the weight {key!r} holds NaN or infinity")
    extra = sorted(set(weights) - set(expected))
    _require(not extra, f"it holds weights the model does not have: {extra[:3]}")


_POSITION = {"step": int, "epoch": int, "window": int, "tokens_seen": int,
             "elapsed": (int, float), "train_seconds": (int, float),
             "best_val_loss": (int, float), "reserve": (int, float)}  # fmt: skip


def _check_resume(state: object, config: ModelConfig, optimizer: str) -> None:
    _require(isinstance(state, dict), "it holds no training state to resume from")
    assert isinstance(state, dict)
    pos = state.get("position")
    _require(isinstance(pos, dict), "its training position is missing")
    assert isinstance(pos, dict)
    for key, value in pos.items():
        _require(key in _POSITION and isinstance(value, _POSITION[key])
                 and not isinstance(value, bool), f"position.{key} = {value!r}")  # fmt: skip
        _require(not isinstance(value, int) or value >= 0, f"position.{key} = {value}")
    _require(state.get("precision", "fp32") in ("fp32", "bf16", "fp16"), "its precision")
    parts = state.get("rnn_state")
    _require(isinstance(parts, list), "its carried state is no list")
    assert isinstance(parts, list)
    want = STATE_PARTS[config.cell] + (1 if config.attention else 0)  # + the memory (M, B, H)
    _require(len(parts) in (0, want),
             f"its carried state has {len(parts)} parts, a {config.cell} carries {want}")
    for i, t in enumerate(parts):
        rows = config.attention if i == STATE_PARTS[config.cell] else config.num_layers
        shape = (rows, -1, config.hidden_size)
        fits = isinstance(t, torch.Tensor) and t.dtype in _FLOAT_DTYPES and t.dim() == 3
        fits = fits and all(want in (-1, got) for want, got in zip(shape, t.shape, strict=True))
        _require(fits and bool(torch.isfinite(t).all()), "its carried state does not fit the model")
    _check_optimizer(state.get("optimizer"), config, optimizer)


def _check_optimizer(opt: object, config: ModelConfig, optimizer: str) -> None:
    """The optimizer state against a fresh optimizer of the same kind over the model's
    parameters, in the order training.make_optimizer groups them (matrices, then vectors):
    every group's settings present and of the right type, every state tensor of its
    parameter's shape."""
    bad = "its optimizer state does not fit the model"
    _require(isinstance(opt, dict) and isinstance(opt.get("state"), dict)
             and isinstance(opt.get("param_groups"), list) and len(opt["param_groups"]) == 2,
             bad)  # fmt: skip
    assert isinstance(opt, dict)
    with torch.device("meta"):
        params = list(LanguageModel(config).parameters())
        groups = [[p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2]]
        kind = torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW
        fresh = kind([{"params": g} for g in groups], lr=1.0).state_dict()
    ordered = [p.shape for g in groups for p in g]
    for saved, want in zip(opt["param_groups"], fresh["param_groups"], strict=True):
        _require(isinstance(saved, dict) and saved.get("params") == want["params"], bad)
        for key, value in want.items():
            if key in ("fused", "foreach"):  # chosen by the device it trained on: None or a bool
                _require(key in saved and saved[key] in (None, True, False), f"{bad} ({key})")
                continue
            _require(key in saved and type(saved[key]) is type(value), f"{bad} ({key})")
            # amsgrad, maximize, ...: what the state must hold and which way a step goes.
            _require(not isinstance(value, bool) or saved[key] == value, f"{bad} ({key})")
    entry_keys = {"step", "exp_avg", "exp_avg_sq"} if kind is torch.optim.AdamW else None
    for i, entry in opt["state"].items():
        _require(isinstance(i, int) and 0 <= i < len(ordered) and isinstance(entry, dict), bad)
        _require(entry_keys is None or set(entry) == entry_keys, bad)
        for t in entry.values():
            _require(isinstance(t, torch.Tensor) and t.is_floating_point()
                     and bool(torch.isfinite(t).all())
                     and (t.dim() == 0 or t.shape == ordered[i]), bad)  # fmt: skip


def weights_fingerprint(ckpt: dict[str, Any]) -> str:
    """A checked checkpoint's model, in 16 hex digits: the model's one fingerprint
    (portable.fingerprint_of, over the step-layout weights its model file holds), so best.pt,
    its model.safetensors, the ONNX graph, the page and a .clz all name it alike. A model with
    no portable form (portable.no_portable_form) is named by its torch weights instead."""
    from charlstm.formats.model_file import no_portable_form

    config = ModelConfig(**ckpt["model_config"])
    if no_portable_form(config) is None:
        net = LanguageModel(config)
        net.load_state_dict({k: v.float() for k, v in ckpt["model"].items()})
        return model_fingerprint(net, ckpt["model_config"], ckpt["tokenizer"])
    return _torch_fingerprint(ckpt["model"], ckpt["model_config"], ckpt["tokenizer"])


def model_fingerprint(net: LanguageModel, config: dict[str, Any], tokenizer: dict[str, Any]) -> str:
    """The one fingerprint (weights_fingerprint) of a model in memory, given its config and
    tokenizer as saved (asdict, to_dict)."""
    from charlstm.formats.model_file import fingerprint_of, no_portable_form

    if no_portable_form(net.cfg) is None:
        return fingerprint_of(portable_weights(net), config, tokenizer)
    return _torch_fingerprint(net.state_dict(), config, tokenizer)


def _torch_fingerprint(
    weights: dict[str, torch.Tensor], config: dict[str, Any], tokenizer: dict[str, Any]
) -> str:
    from charlstm.formats.model_file import hashed_config

    h = Fingerprinter()
    h.update(json.dumps(hashed_config(config), sort_keys=True))
    h.update(json.dumps(tokenizer, sort_keys=True))
    for name in sorted(weights):
        t = weights[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}")
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hex()


def describe(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """What a checkpoint holds, as plain data (`charlstm info --json`)."""
    config = asdict(ModelConfig(**ckpt["model_config"]))  # every field, defaults filled in
    best = ckpt.get("best_val_loss")
    return {
        "path": str(path),
        "charlstm_version": ckpt.get("charlstm_version"),
        "format_version": ckpt.get("format_version"),
        "model": config,
        "parameters": parameter_count(ModelConfig(**config)),
        "tokenizer": {"kind": ckpt["tokenizer"].get("kind"), "vocab_size": config["vocab_size"]},
        "corpus": ckpt.get("corpus"),
        "steps": ckpt.get("step"),
        "tokens_seen": ckpt.get("tokens_seen"),
        "best_val_loss": best if best is not None and math.isfinite(best) else None,
        "train_config": ckpt.get("train_config"),
        "metrics": ckpt.get("metrics") or [],
        "train_curve": ckpt.get("train_curve") or [],
        "parent": ckpt.get("parent"),
        "resumable": "resume" in ckpt,
        "fingerprint": weights_fingerprint(ckpt),
    }
