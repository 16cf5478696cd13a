"""`charlstm compress` and `charlstm decompress`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from charlstm.cli.app import _command
from charlstm.cli.options import Checkpoints, ModelPath, Quiet
from charlstm.cli.output import _load, _write_stdout
from charlstm.config import CHECKPOINTS
from charlstm.display.coding import CodingBar, compress_summary, decompress_summary
from charlstm.display.console import err_console
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


def _load_codec(
    model: Path | None, engine: str, threads: int, checkpoints: Path
) -> tuple[Path, Any]:
    """The checkpoint's path and the model ready to code. Quietly: a failure later must leave
    one line on stderr, so the path is said in the summary instead."""
    from charlstm.api import codec

    net = _load(model, threads, err_console(quiet=True), streams=0, checkpoints=checkpoints)
    return net.path, codec(net, engine)


def _coded(err: Any, what: str, code: Callable[[CodingBar], bytes]) -> tuple[bytes, float]:
    """Run `code` with a progress bar: its bytes and the seconds it took."""
    bar = CodingBar(err, what)
    t0 = time.perf_counter()
    try:
        return code(bar), time.perf_counter() - t0
    finally:
        bar.close()


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
    from charlstm.api import check_coder

    check_coder()
    data = _read_input(source)
    path, codec = _load_codec(model, engine, threads, checkpoints)
    blob, seconds = _coded(err, "compress", lambda bar: codec.compress(
        data, segments=segments or None, progress=bar))
    _write_stdout(blob)
    err.print(compress_summary(path, data, blob, seconds), style="dim", soft_wrap=True)


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
    data, seconds = _coded(err, "decompress", lambda bar: codec.decompress(blob, progress=bar))
    _write_stdout(data)
    err.print(decompress_summary(path, blob, data, seconds), style="dim", soft_wrap=True)
