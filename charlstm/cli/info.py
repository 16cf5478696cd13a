"""`charlstm info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charlstm.cli.app import _command
from charlstm.cli.options import Checkpoints, Quiet, options_of
from charlstm.cli.output import _write_stdout
from charlstm.config import CHECKPOINTS
from charlstm.display.console import err_console
from charlstm.display.runs import info_lines, plot_metrics
from charlstm.errors import CharlstmError
from charlstm.options import InfoOptions


@_command
@options_of(InfoOptions)
def info(*, checkpoints: Checkpoints = CHECKPOINTS, quiet: Quiet = False, **options: Any) -> None:
    """What a checkpoint holds, read without running any pickled code."""
    from charlstm.api import info as read_info

    opts = InfoOptions(**options)
    data, plot = read_info(opts.model, checkpoints=checkpoints), opts.plot
    if plot is not None:
        if not data["metrics"] and data["path"].endswith(".safetensors"):
            raise CharlstmError(
                f"a model file keeps no training curve to plot: plot its run's checkpoint "
                f"(charlstm info {Path(data['path']).with_name('best.pt')} --plot {plot})"
            )
        plot_metrics(data["metrics"], plot, title=data["path"], curve=data["train_curve"])
        err_console(quiet).print(f"wrote {plot}", style="dim")
    if opts.json_out:
        _write_stdout(json.dumps(data) + "\n")
    else:
        _write_stdout(info_lines(data))
