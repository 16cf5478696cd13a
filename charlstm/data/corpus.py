"""Resolve corpus arguments (files, folders, `-` for stdin, built-in names) into one text.

Every way in ends in the same decoding rules: a leading BOM is stripped, "\\r\\n" becomes
"\\n", binary and badly encoded input is refused with one line that says what to do.
Expected failures raise `CorpusError`, whose message the CLI prints as is.
No torch here: the CLI resolves a corpus before it pays for importing torch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from charlstm.data.builtin import BUILTIN_CORPORA, build_builtin
from charlstm.data.decoding import (
    CorpusError,
    check_codec,
    decode,
    decode_chunks,
    normalise,
    nul_offset,
    read_from,
)
from charlstm.files import fingerprint

__all__ = [
    "CHUNK_BYTES",
    "Corpus",
    "CorpusError",
    "CorpusStream",
    "load_corpus",
]


@dataclass(frozen=True)
class Corpus:
    """The resolved text and where it came from."""

    text: str  # the whole text, sources joined with "\n" where one did not end in a newline
    sources: tuple[str, ...]  # what was read: file paths, "<stdin>", or "builtin:<name>"
    fingerprint: str  # files.fingerprint of the text: a cache key


_STDIN_NAME = "<stdin>"
CHUNK_BYTES = 16 << 20  # bytes read at a time: a big corpus never sits in memory whole
# A folder's files up to this size are read whole, so one that turns out not to be text is
# skipped before any of it is used; a bigger one is streamed and must decode.
_WHOLE_FOLDER_FILE = 64 << 20


def _summarise(sources: Sequence[str], shown: int = 3) -> str:
    """Name a few sources, so the error stays one readable line even for a big folder."""
    names = ", ".join(sources[:shown])
    more = len(sources) - shown
    return f"{names} and {more} more" if more > 0 else names


# --- folders ---------------------------------------------------------------------------------


def _walk_visible(folder: Path) -> list[Path]:
    """Every non-hidden file under `folder`, recursively, in sorted path order."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        # Pruning in place stops os.walk from descending into .git, .venv and friends.
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(root, f) for f in files if not f.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


# --- the corpus as a stream of text ----------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    name: str  # as `sources` reports it
    path: Path | None  # None: stdin, read once and kept
    kind: str  # "file" (named: must be text), "folder" (skipped unless text), "builtin"


class CorpusStream:
    """The corpus as pieces of normalised text, read from disk again on every iteration, so a
    corpus larger than memory can be tokenized a piece at a time:

        stream = CorpusStream(["notes/", "extra.txt"], cache_dir=Path("corpora"))
        for text in stream: ...          # "".join(stream) is the corpus text

    Arguments are resolved (and built-ins built) at once; each is, in this order: `-` (stdin, at
    most once, read whole now), an existing file or folder, or a built-in name. Sources are
    joined with "\\n" where one does not end in one. `sources` lists what the last full
    iteration used; `skipped`, the files of a folder it left out as not text, and why.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        cache_dir: Path,
        stdin: TextIO | BinaryIO | None = None,
        encoding: str = "utf-8",
        errors: str = "strict",
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        if isinstance(args, str):  # a bare string would be read one character at a time
            args = [args]
        if not args:
            raise CorpusError(
                "no corpus given: pass a file, a folder, '-' for stdin, "
                f"or a built-in name ({', '.join(BUILTIN_CORPORA)})"
            )
        check_codec(encoding, errors)
        self.encoding, self.errors, self.chunk_bytes = encoding, errors, chunk_bytes
        self._stdin_text = ""
        # Groups of sources: a folder's files form one group, which must yield some text.
        self._groups: list[tuple[str | None, list[_Source]]] = []
        for arg in args:
            path = Path(arg)
            # `-` comes first, as in cat and grep: a stray file named "-" must not hijack stdin.
            if arg == "-":
                if any(s.path is None for _, group in self._groups for s in group):
                    raise CorpusError("'-' (stdin) can be given only once")
                self._stdin_text = _read_stream(
                    stdin if stdin is not None else sys.stdin.buffer, encoding, errors
                )
                self._groups.append((None, [_Source(_STDIN_NAME, None, "stdin")]))
            elif arg and path.is_dir():  # Path("") is ".": an empty argument must not read cwd
                files = [_Source(str(p), p, "folder") for p in _walk_visible(path) if p.is_file()]
                self._groups.append((str(path), files))
            elif arg and path.exists():
                self._groups.append((None, [_Source(arg, path, "file")]))
            elif arg in BUILTIN_CORPORA:
                built = build_builtin(arg, cache_dir)
                self._groups.append((None, [_Source(f"builtin:{arg}", built, "builtin")]))
            else:
                raise CorpusError(
                    f"no such file, folder or built-in corpus: {arg!r} "
                    f"(built-ins: {', '.join(BUILTIN_CORPORA)})"
                )
        self.sources: tuple[str, ...] = tuple(s.name for _, group in self._groups for s in group)
        self.skipped: tuple[tuple[str, str], ...] = ()  # (file, why): a folder's non-text files

    @property
    def size_bytes(self) -> int:
        """Bytes to read (stdin counted as its text): how big the corpus is before reading it."""
        total = len(self._stdin_text)
        for _, group in self._groups:
            for s in group:
                if s.path is not None:
                    try:
                        total += s.path.stat().st_size
                    except OSError:
                        pass  # reading it will say what is wrong
        return total

    def signature(self) -> list[object] | None:
        """Every file's absolute path, size and modification time (None when stdin is read):
        equal signatures mean, in practice, equal text, as make and rsync assume."""
        found: list[object] = [self.encoding, self.errors]
        for _, group in self._groups:
            for s in group:
                if s.path is None:
                    return None
                try:
                    st = s.path.stat()
                except OSError:
                    return None
                found.append([str(s.path.resolve()), st.st_size, st.st_mtime_ns])
        return found

    def __iter__(self) -> Iterator[str]:
        used: list[str] = []
        skipped: list[tuple[str, str]] = []
        newline_due = False  # the text so far is not empty and does not end in "\n"
        for folder, group in self._groups:
            found = 0
            for source in group:
                pieces = self._open(source)
                if isinstance(pieces, str):
                    skipped.append((source.name, pieces))  # a folder's file that is not text
                    continue
                found += 1
                used.append(source.name)
                if newline_due:
                    yield "\n"
                    newline_due = False
                for text in pieces:
                    yield text
                    newline_due = not text.endswith("\n")
            if folder is not None and not found:
                raise CorpusError(f"folder {folder!r} holds no text files")
        self.sources, self.skipped = tuple(used), tuple(skipped)

    def _open(self, source: _Source) -> Iterator[str] | str:
        """The source's text pieces, or for a folder's file that is not text, why it is left
        out. The first piece is read (and checked) before this returns."""
        if source.path is None:
            return iter([self._stdin_text])
        encoding, errors, name = self.encoding, self.errors, source.name
        if source.kind == "builtin":
            # We wrote it as UTF-8, whatever --encoding says about the user's files; and no
            # binary sniffing: the python corpus may legitimately quote a NUL byte.
            encoding, errors = "utf-8", "strict"
        try:
            f = open(source.path, "rb")  # noqa: SIM115 (closed by _pieces)
        except OSError as e:
            if source.kind == "folder":
                return f"unreadable: {e.strerror or e}"
            raise CorpusError(f"cannot read {name!r}: {e.strerror or e}") from None
        try:
            if source.kind == "folder" and _size(f) <= _WHOLE_FOLDER_FILE:
                data = read_from(f, name)
                f.close()
                nul = nul_offset(data, encoding)
                if nul is not None:
                    return f"binary: a NUL byte at offset {nul}"
                try:
                    return iter([normalise(data.decode(encoding, errors))])
                except UnicodeDecodeError as e:  # a folder may hold stray non-text files
                    return f"not {encoding} at byte {e.start}"
            first = read_from(f, name, self.chunk_bytes)
            nul = nul_offset(first, encoding) if source.kind != "builtin" else None
            if nul is not None:
                f.close()
                if source.kind == "folder":
                    return f"binary: a NUL byte at offset {nul}"
                raise CorpusError(
                    f"{name!r} looks like a binary file (NUL byte at offset {nul}), not text"
                )
        except BaseException:
            f.close()
            raise
        return _pieces(f, first, name, encoding, errors, self.chunk_bytes)


def _size(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_size


def _pieces(
    f: BinaryIO, first: bytes, name: str, encoding: str, errors: str, chunk_bytes: int
) -> Iterator[str]:
    with f:
        yield from decode_chunks(f, first, name, encoding, errors, chunk_bytes)


def _read_stream(stream: TextIO | BinaryIO, encoding: str, errors: str) -> str:
    # A text stream (sys.stdin, a StringIO) is read through its byte buffer when it has one,
    # so stdin follows the same --encoding/--errors rules as files.
    buffer = getattr(stream, "buffer", stream)
    data = buffer.read()
    if isinstance(data, str):  # a StringIO: already text, nothing left to decode
        return normalise(data)
    return decode(data, _STDIN_NAME, encoding, errors)


def load_corpus(
    args: Sequence[str],
    *,
    cache_dir: Path,
    stdin: TextIO | BinaryIO | None = None,
    encoding: str = "utf-8",
    errors: str = "strict",
) -> Corpus:
    """Read every argument (see `CorpusStream`) and join them into one `Corpus` in memory."""
    stream = CorpusStream(args, cache_dir=cache_dir, stdin=stdin, encoding=encoding, errors=errors)
    text = "".join(stream)
    if not text.strip():
        raise CorpusError(f"the corpus is empty: {_summarise(stream.sources)}")
    return Corpus(text=text, sources=stream.sources, fingerprint=fingerprint(text))
