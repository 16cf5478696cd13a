"""`charlstm compress` and `charlstm decompress`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charlstm.cli.app import _command
from charlstm.cli.loading import _load
from charlstm.cli.options import options_of
from charlstm.display.coding import coded, compress_summary, decompress_summary
from charlstm.display.console import err_console
from charlstm.display.stdout import stdout_is_terminal, write_stdout
from charlstm.errors import CharlstmError
from charlstm.options import CompressOptions, DecompressOptions


def _load_codec(opts: CompressOptions | DecompressOptions) -> tuple[Path, Any]:
    """The checkpoint's path and the model ready to code. Quietly: a failure later must leave
    one line on stderr, so the path is said in the summary instead."""
    from charlstm.api import codec

    net = _load(opts, err_console(quiet=True), streams=0)
    return net.path, codec(net, opts.engine)


@_command
@options_of(CompressOptions)
def compress(**options: Any) -> None:
    """Compress a text with the model (exactly decodable on any machine) to stdout."""
    opts = CompressOptions(**options)
    err = err_console(opts.quiet)
    opts.check()
    if stdout_is_terminal():  # as gzip does: binary on a terminal helps no one
        raise CharlstmError(
            "refusing to write compressed data to a terminal; redirect it: > FILE.clz"
        )
    from charlstm.api import check_coder, read_bytes

    check_coder()
    data = read_bytes(opts.source)
    path, codec = _load_codec(opts)
    blob, seconds = coded(err, "compress", lambda bar: codec.compress(
        data, segments=opts.segments or None, progress=bar))
    write_stdout(blob)
    err.print(compress_summary(path, data, blob, seconds), style="dim", soft_wrap=True)


@_command
@options_of(DecompressOptions)
def decompress(**options: Any) -> None:
    """Decompress a file made by `charlstm compress` with the same model, to stdout. Nothing is
    written unless the whole text matches the checksum the file carries."""
    opts = DecompressOptions(**options)
    err = err_console(opts.quiet)
    from charlstm.api import check_coder, compressed_header, read_bytes

    check_coder()
    blob = read_bytes(opts.source)
    compressed_header(blob)  # a file that is no compressed file fails before the model loads
    path, codec = _load_codec(opts)
    data, seconds = coded(err, "decompress", lambda bar: codec.decompress(blob, progress=bar))
    write_stdout(data)
    err.print(decompress_summary(path, blob, data, seconds), style="dim", soft_wrap=True)
