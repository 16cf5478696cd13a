"""How `charlstm chat` meets its user on a terminal: a hint, then a prompt on stderr before each
line typed (with line editing and history); lines piped in are read without either."""

from __future__ import annotations

import sys
from collections.abc import Iterator

from rich.console import Console


def typed_lines(err: Console) -> Iterator[str]:
    """The lines the user types or pipes in, each without its newline, until Ctrl-D (the
    input's end)."""
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401 (line editing and history for input())

        err.print("type a line and press Enter; Ctrl-D leaves", style="dim")
    while True:
        if interactive:
            sys.stderr.write("> ")
            sys.stderr.flush()
        try:
            line = input()
        except EOFError:
            if interactive:
                sys.stderr.write("\n")
            return
        yield line
