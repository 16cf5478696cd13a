"""`charlstm info`."""

from __future__ import annotations

import json
from typing import Any

from charlstm.cli.app import _command
from charlstm.cli.options import options_of
from charlstm.display.console import err_console
from charlstm.display.runs import info_lines, plot_info
from charlstm.display.stdout import write_stdout
from charlstm.options import InfoOptions


@_command
@options_of(InfoOptions)
def info(**options: Any) -> None:
    """What a checkpoint holds, read without running any pickled code."""
    from charlstm.api import info as read_info

    opts = InfoOptions(**options)
    data, plot = read_info(opts.model, checkpoints=opts.checkpoints), opts.plot
    if plot is not None:
        plot_info(data, plot)
        err_console(opts.quiet).print(f"wrote {plot}", style="dim")
    if opts.json_out:
        write_stdout(json.dumps(data) + "\n")
    else:
        write_stdout(info_lines(data))
