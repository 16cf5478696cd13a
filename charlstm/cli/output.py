"""What the commands share besides options: stdout (the product, written plainly and
flushed), stdin notes, reading texts and loading a model through the API.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from charlstm.config import CHECKPOINTS


def reader_gone() -> None:
    """The reader of stdout went away (`| head`): point stdout at /dev/null, so that Python's
    flush at exit does not complain, and the command can stop quietly with success, as
    `yes | head` does. (Left alone, click would turn the broken pipe into exit status 1.)"""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _write_stdout(text: str | bytes) -> None:
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


class _StdoutConsole(Console):
    """A Rich console for the product on stdout: a reader that goes away (`| head`) ends the
    command quietly with status 0, as for plain text (Rich's own choice is status 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        reader_gone()
        raise typer.Exit(0)



def _stdin_note(args: list[str] | str | None, err: Console) -> None:
    """Reading stdin from a terminal waits for the user: say so, and how to end it."""
    if args and "-" in ([args] if isinstance(args, str) else args) and sys.stdin.isatty():
        err.print("reading stdin; end with Ctrl-D", style="dim")


def _stream(pieces: Any, head: str = "", end_line: bool = False) -> None:
    """Write `head`, then generated pieces as they come, every 20 ms rather than every token:
    as live to a reader, with far fewer calls. stdout gets exactly that text; a newline ends a
    text that lacks one only on a terminal (so the shell's prompt and a Ctrl-C message start
    on a line of their own), or always with `end_line` (chat's turns, one after another)."""
    pending: list[str] = []
    last = _flush_pending([head], "")
    due = time.perf_counter()
    try:
        for piece in pieces:
            pending.append(piece)
            if time.perf_counter() >= due:
                last = _flush_pending(pending, last)
                due = time.perf_counter() + 0.02
    finally:
        last = _flush_pending(pending, last)
        if last != "\n" and (end_line or (last and _stdout_is_terminal())):
            _write_stdout("\n")


def _flush_pending(pending: list[str], last: str) -> str:
    """Write what is pending; the last character written so far."""
    text = "".join(pending)
    pending.clear()
    if text:
        _write_stdout(text)
    return text[-1:] or last


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _load(
    model: Path | None,
    threads: int,
    err: Console,
    device: Any = "cpu",
    streams: int = 1,
    checkpoints: Path = CHECKPOINTS,
    engine: str = "torch",
) -> Any:
    """The model, loaded through the API, on `threads` CPU threads (0: chosen for `streams`)."""
    from charlstm.api import load

    net = load(model, device=device, checkpoints=checkpoints, engine=engine)
    if net.engine == "torch":
        from charlstm.api import use_threads

        use_threads(threads, streams)
    used = f"numpy, {net.portable.path.name}" if net.engine == "numpy" else "torch"
    err.print(f"model {net.path} ({used})", style="dim")
    return net


def _blas_threads(threads: int, streams: int) -> None:
    """numpy's BLAS takes its thread count from the environment once, when numpy loads: one
    thread for a single stream (a second core does not speed up a matrix-vector product, and a
    busy one slows it many times), `--threads` when given, else its own default."""
    if "numpy" in sys.modules:
        return
    if threads > 0:
        os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    elif streams == 1:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _read_texts(args: list[str], encoding: str, errors: str, err: Console) -> str:
    from charlstm.api import read_text

    _stdin_note(args, err)
    with err.status("reading text…"):
        return read_text(args, encoding=encoding, errors=errors)


def _note_unknown(encoded: Any, err: Console) -> None:
    """Say on stderr what of a text the model cannot read (skipped, or scored as unknown)."""
    if encoded.skipped_chars:
        err.print(f"[yellow]note:[/] skipping {encoded.skipped_chars:,} characters the model "
                  f"never saw: {''.join(encoded.unknown[:20])!r}")  # fmt: skip
    if encoded.unknown_words:
        err.print(f"[yellow]note:[/] {encoded.unknown_words:,} words outside the vocabulary "
                  "count as unknown")  # fmt: skip
