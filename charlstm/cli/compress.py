"""`charlstm compress` and `charlstm decompress`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from charlstm.cli.app import _command
from charlstm.cli.display import CodingBar, err_console
from charlstm.cli.options import Checkpoints, ModelPath, Quiet
from charlstm.cli.output import _load
from charlstm.config import CHECKPOINTS
from charlstm.errors import CharlstmError, UsageError

CompressInput = Annotated[str, typer.Argument(help="The file to read; - (default) reads stdin.")]
ThreadsOption = Annotated[
    int,
    typer.Option(
        help="CPU threads of the torch engine; 0 = all cores. (numpy's BLAS follows "
        "OPENBLAS_NUM_THREADS.)"
    ),
]
EngineOption = Annotated[
    Literal["torch", "numpy"],
    typer.Option(
        help="torch or numpy: either one, on any machine and any number of threads, codes the "
        "very same bytes (the model runs in exact integer arithmetic)."
    ),
]


def _read_input(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as e:
        raise CharlstmError(f"cannot read '{source}': {e.strerror or e}") from None


def _write_stdout_bytes(data: bytes) -> None:
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None


def _load_codec(
    model: Path | None, engine: str, threads: int, checkpoints: Path
) -> tuple[Path, Any]:
    """The checkpoint's path and the model ready to code. Quietly: a failure later must leave
    one line on stderr, so the path is said in the summary instead."""
    from charlstm.api import codec

    net = _load(model, threads, err_console(quiet=True), streams=0, checkpoints=checkpoints)
    return net.path, codec(net, engine)


@_command
def compress(
    source: CompressInput = "-",
    model: ModelPath = None,
    segments: Annotated[
        int,
        typer.Option(
            help="Code the input as this many segments side by side, each from a zero state "
            "(several times faster in a batch; about 16 bits each). 0 = one per 2,048 tokens, "
            "at most 256.",
        ),
    ] = 0,
    engine: EngineOption = "torch",
    checkpoints: Checkpoints = CHECKPOINTS,
    threads: ThreadsOption = 0,
    quiet: Quiet = False,
) -> None:
    """Compress a text with the model (exactly decodable on any machine) to stdout."""
    err = err_console(quiet)
    if segments < 0:
        raise UsageError(f"--segments must be 0 (from the length) or more, got {segments}")
    if sys.stdout.isatty():  # as gzip does: binary on a terminal helps no one
        raise CharlstmError(
            "refusing to write compressed data to a terminal; redirect it: > FILE.clz"
        )
    from charlstm.api import check_coder, compressed_header

    check_coder()
    data = _read_input(source)
    path, codec = _load_codec(model, engine, threads, checkpoints)
    bar = CodingBar(err, "compress")
    t0 = time.perf_counter()
    try:
        blob = codec.compress(data, segments=segments or None, progress=bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    _write_stdout_bytes(blob)
    header = compressed_header(blob)
    chars = len(data.decode("utf-8", errors="surrogateescape"))
    err.print(
        f"{path}: {len(data):,} → {len(blob):,} bytes "
        f"({8 * len(blob) / max(chars, 1):.3f} bits/char) "
        f"in {seconds:.1f}s ({len(data) / 1000 / max(seconds, 1e-9):,.1f} KB/s) · "
        f"{header.segments} segments"
        + (f", {header.raw_segments} stored raw (the model cannot predict them)"
           if header.raw_segments else ""),  # fmt: skip
        style="dim",
        soft_wrap=True,
    )


@_command
def decompress(
    source: CompressInput = "-",
    model: ModelPath = None,
    engine: EngineOption = "torch",
    checkpoints: Checkpoints = CHECKPOINTS,
    threads: ThreadsOption = 0,
    quiet: Quiet = False,
) -> None:
    """Decompress a file made by `charlstm compress` with the same model, to stdout. Nothing is
    written unless the whole text matches the checksum the file carries."""
    err = err_console(quiet)
    from charlstm.api import check_coder, compressed_header

    check_coder()
    blob = _read_input(source)
    compressed_header(blob)  # a file that is no compressed file fails before the model loads
    path, codec = _load_codec(model, engine, threads, checkpoints)
    bar = CodingBar(err, "decompress")
    t0 = time.perf_counter()
    try:
        data = codec.decompress(blob, progress=bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    _write_stdout_bytes(data)
    err.print(
        f"{path}: {len(blob):,} → {len(data):,} bytes in {seconds:.1f}s "
        f"({len(data) / 1000 / max(seconds, 1e-9):,.1f} KB/s)",
        style="dim",
        soft_wrap=True,
    )
