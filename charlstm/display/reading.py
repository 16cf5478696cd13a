"""What a command says about the text it reads (stderr): that stdin waits for the user, and
what of a text the model cannot read."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console


def stdin_note(args: list[str] | str | None, err: Console) -> None:
    """Reading stdin from a terminal waits for the user: say so, and how to end it."""
    if args and "-" in ([args] if isinstance(args, str) else args) and sys.stdin.isatty():
        err.print("reading stdin; end with Ctrl-D", style="dim")


def unknown_notes(encoded: Any, err: Console) -> None:
    """Say what of a text (api.EncodedText) the model cannot read: skipped, or scored as
    unknown."""
    if encoded.skipped_chars:
        err.print(f"[yellow]note:[/] skipping {encoded.skipped_chars:,} characters the model "
                  f"never saw: {''.join(encoded.unknown[:20])!r}")  # fmt: skip
    if encoded.unknown_words:
        err.print(f"[yellow]note:[/] {encoded.unknown_words:,} words outside the vocabulary "
                  "count as unknown")  # fmt: skip


def skipped_note(unknown: list[str], err: Console) -> None:
    """A chat line's characters the model never saw, which it skipped."""
    if unknown:
        err.print(f"[yellow]note:[/] skipped characters the model never saw: "
                  f"{''.join(unknown[:20])!r}")  # fmt: skip
