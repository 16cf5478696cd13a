"""Thin doors for what `charlstm` does besides loading and sampling (reading texts, a prime or
bytes; devices and threads, the run folders, the compressor, unit tracking), so that cli/
reaches the library only through charlstm.api. Each imports what it needs when called (--help
stays light)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from charlstm.api.model import Model
from charlstm.config import CHECKPOINTS
from charlstm.errors import CharlstmError, OptionError

if TYPE_CHECKING:  # these import torch: only the calls that need it load them
    import torch


def read_text(sources: list[str], *, encoding: str = "utf-8", errors: str = "strict") -> str:
    """The text of files, folders, "-" (stdin) or a built-in corpus, as `evaluate` reads it."""
    from charlstm.config import CORPORA
    from charlstm.data.corpus import load_corpus

    return load_corpus(sources, cache_dir=CORPORA, encoding=encoding, errors=errors).text


def read_prime(prime: str | None, prime_file: str | Path | None = None) -> str | None:
    """The prime `sample` starts from: `prime` itself ("-": stdin, read whole), or the text of
    `prime_file` (UTF-8); None without either. Given both, an OptionError."""
    if prime is not None and prime_file is not None:
        raise OptionError("give the prime with {prime} or with {prime_file}, not both")
    if prime_file is not None:
        try:
            return Path(prime_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or str(e).splitlines()[0]
            raise CharlstmError(f"cannot read the prime from '{prime_file}': {why}") from None
    if prime == "-":
        return sys.stdin.read()
    return prime


def read_bytes(source: str | Path) -> bytes:
    """The bytes of a file, or of stdin for "-" (what `compress` and `decompress` read)."""
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as e:
        raise CharlstmError(f"cannot read '{source}': {e.strerror or e}") from None


def torch_device(name: str = "auto") -> torch.device:
    """The torch device a name means: "auto" (a CUDA GPU, else Apple's MPS, else the CPU),
    cpu, cuda, cuda:N or mps; an OptionError for one this machine lacks."""
    from charlstm.device import resolve_device

    return resolve_device(name)


def use_threads(threads: int = 0, streams: int = 1) -> None:
    """torch on `threads` CPU threads (0: chosen for `streams` parallel streams)."""
    from charlstm.device import set_threads

    set_threads(threads, streams)


def list_runs(checkpoints: str | Path = CHECKPOINTS) -> list[Any]:
    """The runs under `checkpoints`, newest first (formats.run_folder.RunRecord)."""
    from charlstm.formats.run_folder import list_runs as found

    return found(Path(checkpoints))


def delete_run(name: str, *, checkpoints: str | Path = CHECKPOINTS) -> int:
    """Delete a run's folder; the bytes freed."""
    from charlstm.formats.run_folder import delete_run as delete

    return delete(Path(checkpoints), name)


def slim_run(name: str, *, checkpoints: str | Path = CHECKPOINTS) -> int:
    """Keep only a run's best.pt (delete what only resuming needs); the bytes freed."""
    from charlstm.formats.run_folder import slim_run as slim

    return slim(Path(checkpoints), name)


def check_coder() -> None:
    """A CharlstmError unless the entropy coder compress needs is installed."""
    from charlstm.compress.codec import require_constriction

    require_constriction()


def run_age(seconds_since_epoch: float) -> str:
    """How long ago a time was, as `charlstm runs` shows it ("3 h")."""
    from charlstm.formats.run_folder import age

    return age(seconds_since_epoch)


def codec(model: Model, engine: str = "torch") -> Any:
    """The lossless coder over a loaded model (compress.codec.Codec: compress, decompress)."""
    from charlstm.compress.codec import Codec

    return Codec(model.net, model.tokenizer, engine=engine)


def compressed_header(blob: bytes) -> Any:
    """What a compressed file's header says (compress.codec.Header); a CharlstmError if `blob`
    is no compressed file."""
    from charlstm.compress.codec import read_header

    return read_header(blob)


def units_tracking(activations: dict[str, np.ndarray], text: str, top: int = 5) -> list[dict]:
    """The units whose values follow simple properties of `text` best (quotes, brackets, line
    position, word starts): kind, unit, property, correlation."""
    from charlstm.evaluation.visualize import find_units, properties

    return find_units(activations, properties(text), top=top)
