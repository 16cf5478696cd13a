"""One self-contained checkpoint file: written atomically, loaded without running pickled code.

A checkpoint is a dict of tensors and plain Python values:
    format, format_version, charlstm_version, model_config, train_config, tokenizer,
    model (state dict), metrics, corpus, step, tokens_seen, best_val_loss
and, in last.pt only, "resume": optimizer state, RNG state, data position, carried state.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from charlstm import __version__
from charlstm.errors import CharlstmError
from charlstm.files import FileWriteError, write_atomic

FORMAT = "charlstm"
FORMAT_VERSION = 1


class CheckpointError(CharlstmError):
    """A checkpoint that is missing or cannot be used; the message is one line for the user."""


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
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"'{path}' has checkpoint format {version}, newer than this charlstm "
            f"{__version__} reads ({FORMAT_VERSION}); upgrade charlstm"
        )
    return ckpt


def resolve_checkpoint(model: Path | None, root: Path = Path("checkpoints")) -> Path:
    """A checkpoint file, a run folder (its best.pt, else last.pt), or, with none given,
    the most recently written best.pt under `root`."""
    if model is None:
        found = sorted(root.glob("*/best.pt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise CheckpointError(
                f"no trained model under '{root}/'; train one with `charlstm train CORPUS` "
                "or pass --model PATH"
            )
        return found[-1]
    if model.is_dir():
        for name in ("best.pt", "last.pt"):
            if (model / name).is_file():
                return model / name
        raise CheckpointError(f"'{model}' holds no best.pt or last.pt")
    if not model.exists():
        raise CheckpointError(f"no checkpoint at '{model}'")
    return model


def describe(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """What a checkpoint holds, as plain data (`charlstm info --json`)."""
    config = ckpt["model_config"]
    tied = config.get("tie_weights")
    # A tied head shares the embedding matrix: count it once.
    n_params = sum(t.numel() for k, t in ckpt["model"].items() if k != "head.weight" or not tied)
    best = ckpt.get("best_val_loss")
    return {
        "path": str(path),
        "charlstm_version": ckpt.get("charlstm_version"),
        "format_version": ckpt.get("format_version"),
        "model": config,
        "parameters": n_params,
        "tokenizer": {"kind": ckpt["tokenizer"].get("kind"), "vocab_size": config["vocab_size"]},
        "corpus": ckpt.get("corpus"),
        "steps": ckpt.get("step"),
        "tokens_seen": ckpt.get("tokens_seen"),
        "best_val_loss": best if best is not None and math.isfinite(best) else None,
        "train_config": ckpt.get("train_config"),
        "metrics": ckpt.get("metrics") or [],
        "resumable": "resume" in ckpt,
    }
