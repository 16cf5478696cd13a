"""`charlstm export`."""

from __future__ import annotations

from typing import Any

from charlstm.cli.app import _command
from charlstm.cli.options import options_of
from charlstm.display.console import err_console
from charlstm.options import ExportOptions


@_command
@options_of(ExportOptions)
def export(**options: Any) -> None:
    """Write a checkpoint's model.safetensors (sampling without torch) beside it and, when asked,
    a browser page and an ONNX graph. Given a model.safetensors, torch is not needed."""
    from charlstm.api import export as export_model

    opts = ExportOptions(**options)
    err = err_console(opts.quiet)
    for path in export_model(opts.model, html=opts.html_out, onnx=opts.onnx_out,
                             checkpoints=opts.checkpoints):  # fmt: skip
        err.print(f"wrote {path}", style="dim")
