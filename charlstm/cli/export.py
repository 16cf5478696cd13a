"""`charlstm export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charlstm.cli.app import _command
from charlstm.cli.options import Checkpoints, Quiet, _opt
from charlstm.config import CHECKPOINTS
from charlstm.display.console import err_console


@_command
def export(
    model: Annotated[
        Path | None,
        typer.Argument(
            help="Checkpoint file, run folder or model.safetensors. Default: the newest best.pt.",
            show_default=False,
        ),
    ] = None,
    html_out: Annotated[
        Path | None,
        _opt(
            "Also write one self-contained page that runs the model in a browser, offline: a "
            "prime box, temperature and top-p, text streamed as it is made (char models).",
            "--html",
        ),
    ] = None,
    onnx_out: Annotated[
        Path | None,
        _opt(
            "Also write the one-step graph as ONNX (token ids and state in; logits and state "
            "out; needs pip install 'charlstm\\[onnx]').",
            "--onnx",
        ),
    ] = None,
    checkpoints: Checkpoints = CHECKPOINTS,
    quiet: Quiet = False,
) -> None:
    """Write a checkpoint's model.safetensors (sampling without torch) beside it and, when asked,
    a browser page and an ONNX graph. Given a model.safetensors, torch is not needed."""
    from charlstm.api import export as export_model

    err = err_console(quiet)
    for path in export_model(model, html=html_out, onnx=onnx_out, checkpoints=checkpoints):
        err.print(f"wrote {path}", style="dim")
