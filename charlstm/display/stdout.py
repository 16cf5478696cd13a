"""The one writer of the product to stdout: text written plainly and flushed (never through
Rich's markup or wrapping), generated pieces streamed as they come, whole texts under their
header lines. A reader that goes away (`| head`) ends the command quietly with status 0, as
`yes | head` does."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable

import typer
from rich.console import Console


def reader_gone() -> None:
    """The reader of stdout went away (`| head`): point stdout at /dev/null, so that Python's
    flush at exit does not complain, and the command can stop quietly with success, as
    `yes | head` does. (Left alone, click would turn the broken pipe into exit status 1.)"""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def write_stdout(text: str | bytes) -> None:
    """Write text (or bytes: compress's) to stdout and flush it."""
    try:
        if isinstance(text, bytes):
            sys.stdout.buffer.write(text)
            sys.stdout.buffer.flush()
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
    except BrokenPipeError:
        reader_gone()
        raise typer.Exit(0) from None


class StdoutConsole(Console):
    """A Rich console for the product on stdout: a reader that goes away (`| head`) ends the
    command quietly with status 0, as for plain text (Rich's own choice is status 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        reader_gone()
        raise typer.Exit(0)


def stream(pieces: Iterable[str], head: str = "", end_line: bool = False) -> None:
    """Write `head`, then generated pieces as they come, every 20 ms rather than every token:
    as live to a reader, with far fewer calls. stdout gets exactly that text; a newline ends a
    text that lacks one only on a terminal (so the shell's prompt and a Ctrl-C message start
    on a line of their own), or always with `end_line` (chat's turns, one after another)."""
    pending: list[str] = []
    last = flush_pending([head], "")
    due = time.perf_counter()
    try:
        for piece in pieces:
            pending.append(piece)
            if time.perf_counter() >= due:
                last = flush_pending(pending, last)
                due = time.perf_counter() + 0.02
    finally:
        last = flush_pending(pending, last)
        if last != "\n" and (end_line or (last and stdout_is_terminal())):
            write_stdout("\n")


def flush_pending(pending: list[str], last: str) -> str:
    """Write what is pending; the last character written so far."""
    text = "".join(pending)
    pending.clear()
    if text:
        write_stdout(text)
    return text[-1:] or last


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def write_whole(i: int, header: str, text: str) -> None:
    """Text I (from 1) of several, printed whole under its header line, after a blank line
    (from the second on). Its own last newline ends its line: no second one (--json is exact)."""
    end = "" if text.endswith("\n") else "\n"
    write_stdout(("\n" if i > 1 else "") + f"--- {header} ---\n{text}{end}")
