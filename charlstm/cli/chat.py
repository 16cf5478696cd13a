"""`charlstm chat`."""

from __future__ import annotations

import sys
from typing import Any

from charlstm.cli.app import _command
from charlstm.cli.loading import _load
from charlstm.cli.options import options_of
from charlstm.display.chatting import typed_lines
from charlstm.display.console import err_console
from charlstm.display.reading import skipped_note
from charlstm.display.stdout import stream
from charlstm.options import ChatOptions


@_command
@options_of(ChatOptions)
def chat(**options: Any) -> None:
    """Talk with a model: each line you type, and each reply, continues one text, so every
    turn reads all the turns before it. Ctrl-C cuts a reply short; Ctrl-D leaves. Lines can be
    piped in too (one reply per line)."""
    opts = ChatOptions(**options)
    err = err_console(opts.quiet)
    net = _load(opts, err)
    session = net.session(temp=opts.temp, top_k=opts.top_k, top_p=opts.top_p, seed=opts.seed)
    stops = opts.stop or ["\n\n"]
    for line in typed_lines(err):
        skipped_note(session.feed(line + "\n"), err)
        try:
            stream(session.reply(opts.length, stops), end_line=True)
        except KeyboardInterrupt:
            sys.stderr.write("(cut short)\n")
