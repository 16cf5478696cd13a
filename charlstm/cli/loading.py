"""What the commands read, through the API: the model (and the threads it runs on) and the
texts; stdout is display/stdout.py's."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console

from charlstm.display.reading import stdin_note


def _load(
    opts: Any, err: Console, device: Any = "cpu", streams: int = 1, engine: str = "torch"
) -> Any:
    """The model of a command's `opts` (its --model under its --checkpoints), loaded through the
    API, on `opts.threads` CPU threads (0: chosen for `streams`)."""
    from charlstm.api import load

    net = load(opts.model, device=device, checkpoints=opts.checkpoints, engine=engine)
    if net.engine == "torch":
        from charlstm.api import use_threads

        use_threads(opts.threads, streams)
    used = f"numpy, {net.portable.path.name}" if net.engine == "numpy" else "torch"
    err.print(f"model {net.path} ({used})", style="dim")
    return net


def _blas_threads(threads: int, streams: int) -> None:
    """numpy's BLAS takes its thread count from the environment once, when numpy loads: one
    thread for a single stream (a second core does not speed up a matrix-vector product, and a
    busy one slows it many times), `--threads` when given, else its own default."""
    if "numpy" in sys.modules:
        return
    if threads > 0:
        os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    elif streams == 1:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _read_texts(args: list[str], encoding: str, errors: str, err: Console) -> str:
    from charlstm.api import read_text

    stdin_note(args, err)
    with err.status("reading text…"):
        return read_text(args, encoding=encoding, errors=errors)
