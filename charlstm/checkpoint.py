"""One self-contained checkpoint file: written atomically, loaded without running pickled code.

A checkpoint is a dict of tensors and plain Python values:
    format, format_version, charlstm_version, model_config, train_config, tokenizer,
    model (state dict), metrics, corpus, step, tokens_seen, best_val_loss
and, in last.pt only, "resume": optimizer state, RNG state, data position, carried state.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from charlstm import __version__
from charlstm.errors import CharlstmError

FORMAT = "charlstm"
FORMAT_VERSION = 1


class CheckpointError(CharlstmError):
    """A checkpoint that is missing or cannot be used; the message is one line for the user."""


def save_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    """Write a checkpoint atomically (see write_atomic)."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "charlstm_version": __version__}
    payload.update(ckpt)
    write_atomic(path, lambda f: torch.save(payload, f))


def write_atomic(path: Path, content: str | Callable[[BinaryIO], None]) -> None:
    """Temp file in the same folder, flush, fsync, rename over the target.

    A crash or kill at any moment leaves either the old file or the new one, never a torn file.
    `content` is text (UTF-8) or a function that writes to the binary file.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make checkpoints unreadable to others
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        # Make the rename itself durable.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise CheckpointError(f"could not write '{path}': {e.strerror or _first_line(e)}") from e
    except RuntimeError as e:
        # torch.save reports a failed write (e.g. a full disk) as a RuntimeError.
        if "write" not in str(e).lower():
            raise
        raise CheckpointError(f"could not write '{path}': {_first_line(e)}") from e
    finally:
        # On any failure (Ctrl-C included) the old file stays and no temp file is left.
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else type(e).__name__
