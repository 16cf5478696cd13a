"""`charlstm compress` and `charlstm decompress`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charlstm.cli.app import _command
from charlstm.cli.options import Checkpoints, ModelPath, Quiet, options_of
from charlstm.cli.output import _load, _write_stdout
from charlstm.config import CHECKPOINTS
from charlstm.display.coding import CodingBar, compress_summary, decompress_summary
from charlstm.display.console import err_console
from charlstm.errors import CharlstmError, UsageError
from charlstm.options import CompressOptions, DecompressOptions


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
@options_of(CompressOptions)
def compress(
    *, model: ModelPath = None, checkpoints: Checkpoints = CHECKPOINTS, quiet: Quiet = False,
    **options: Any,
) -> None:
    """Compress a text with the model (exactly decodable on any machine) to stdout."""
    opts, err = CompressOptions(**options), err_console(quiet)
    if opts.segments < 0:
        raise UsageError(f"--segments must be 0 (from the length) or more, got {opts.segments}")
    if sys.stdout.isatty():  # as gzip does: binary on a terminal helps no one
        raise CharlstmError(
            "refusing to write compressed data to a terminal; redirect it: > FILE.clz"
        )
    from charlstm.api import check_coder

    check_coder()
    data = _read_input(opts.source)
    path, codec = _load_codec(model, opts.engine, opts.threads, checkpoints)
    blob, seconds = _coded(err, "compress", lambda bar: codec.compress(
        data, segments=opts.segments or None, progress=bar))
    _write_stdout(blob)
    err.print(compress_summary(path, data, blob, seconds), style="dim", soft_wrap=True)


@_command
@options_of(DecompressOptions)
def decompress(
    *, model: ModelPath = None, checkpoints: Checkpoints = CHECKPOINTS, quiet: Quiet = False,
    **options: Any,
) -> None:
    """Decompress a file made by `charlstm compress` with the same model, to stdout. Nothing is
    written unless the whole text matches the checksum the file carries."""
    opts, err = DecompressOptions(**options), err_console(quiet)
    from charlstm.api import check_coder, compressed_header

    check_coder()
    blob = _read_input(opts.source)
    compressed_header(blob)  # a file that is no compressed file fails before the model loads
    path, codec = _load_codec(model, opts.engine, opts.threads, checkpoints)
    data, seconds = _coded(err, "decompress", lambda bar: codec.decompress(blob, progress=bar))
    _write_stdout(data)
    err.print(decompress_summary(path, blob, data, seconds), style="dim", soft_wrap=True)
