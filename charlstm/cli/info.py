"""`charlstm info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from charlstm.cli.app import _command
from charlstm.cli.options import Checkpoints, Json, Quiet, _opt
from charlstm.cli.output import _write_stdout
from charlstm.config import CHECKPOINTS
from charlstm.display.console import err_console
from charlstm.display.runs import info_lines, plot_metrics
from charlstm.errors import CharlstmError


@_command
def info(
    model: Annotated[
        Path | None,
        typer.Argument(
            help="Checkpoint file or run folder. Default: the newest best.pt under --checkpoints."
        ),
    ] = None,
    json_out: Json = False,
    plot: Annotated[
        Path | None,
        _opt(
            "Also draw the training and validation loss against step into this image (PNG, SVG, "
            "PDF; needs matplotlib: pip install 'charlstm\\[plot]')."
        ),
    ] = None,
    checkpoints: Checkpoints = CHECKPOINTS,
    quiet: Quiet = False,
) -> None:
    """What a checkpoint holds, read without running any pickled code."""
    from charlstm.api import info as read_info

    data = read_info(model, checkpoints=checkpoints)
    if plot is not None:
        if not data["metrics"] and data["path"].endswith(".safetensors"):
            raise CharlstmError(
                f"a model file keeps no training curve to plot: plot its run's checkpoint "
                f"(charlstm info {Path(data['path']).with_name('best.pt')} --plot {plot})"
            )
        plot_metrics(data["metrics"], plot, title=data["path"], curve=data["train_curve"])
        err_console(quiet).print(f"wrote {plot}", style="dim")
    if json_out:
        _write_stdout(json.dumps(data) + "\n")
    else:
        _write_stdout(info_lines(data))
