"""`charlstm chat`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from charlstm.cli.app import _command
from charlstm.cli.options import Checkpoints, ModelPath, Quiet, Threads, _opt
from charlstm.cli.output import _load, _stream
from charlstm.config import CHECKPOINTS, SampleConfig
from charlstm.display.console import err_console


@_command
def chat(
    model: ModelPath = None,
    length: Annotated[int, typer.Option("--length", "-n", help="Tokens at most per reply.")] = 400,
    stop: Annotated[
        list[str] | None,
        _opt("A reply ends before this text (give it again for more). Default: a blank line."),
    ] = None,
    temp: Annotated[
        float | None, _opt(f"Temperature. Default: {SampleConfig.temperature}.", "--temp")
    ] = None,
    top_k: Annotated[int | None, _opt("Sample among the k most likely tokens.")] = None,
    top_p: Annotated[
        float | None, _opt("Sample among the most likely tokens whose probability sums to p.")
    ] = None,
    seed: Annotated[int | None, _opt("Random seed; random when absent.")] = None,
    checkpoints: Checkpoints = CHECKPOINTS,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Talk with a model: each line you type, and each reply, continues one text, so every
    turn reads all the turns before it. Ctrl-C cuts a reply short; Ctrl-D leaves. Lines can be
    piped in too (one reply per line)."""
    err = err_console(quiet)
    net = _load(model, threads, err, checkpoints=checkpoints)
    session = net.session(temp=temp, top_k=top_k, top_p=top_p, seed=seed)
    stops = stop or ["\n\n"]
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
        unknown = session.feed(line + "\n")
        if unknown:
            err.print(f"[yellow]note:[/] skipped characters the model never saw: "
                      f"{''.join(unknown[:20])!r}")  # fmt: skip
        try:
            _stream(session.reply(length, stops), end_line=True)
        except KeyboardInterrupt:
            sys.stderr.write("(cut short)\n")
