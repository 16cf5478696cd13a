"""`charlstm serve`."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from charlstm.cli.app import _command
from charlstm.cli.options import Checkpoints, Device, Quiet, Threads, options_of
from charlstm.config import CHECKPOINTS, ServeConfig
from charlstm.display.console import err_console
from charlstm.display.serving import serve_report
from charlstm.errors import CharlstmError


@_command
@options_of(ServeConfig)
def serve(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Run folders or checkpoint files to serve, each under its folder's name (the "
            'request\'s "model"). Default: the newest run under --checkpoints.',
            show_default=False,
        ),
    ] = None,
    *,
    device: Device = "auto",
    checkpoints: Checkpoints = CHECKPOINTS,
    threads: Threads = 0,
    quiet: Quiet = False,
    **options: Any,
) -> None:
    """Serve models over HTTP: OpenAI-style /v1/completions and /v1/chat/completions (streaming
    too), /score, /health."""
    # From here on SIGINT and SIGTERM only stop the server (status 0), even while models load.
    signals: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _frame: signals.append(s))
    cfg = ServeConfig(**{k: v for k, v in options.items() if v is not None})
    try:  # serve/ is built on the API, beside it
        from charlstm.serve import server
    except ImportError as e:
        raise CharlstmError(
            f"serve needs the [serve] extra ({e.name} is missing): pip install 'charlstm[serve]'"
        ) from None
    from charlstm.api import torch_device, use_threads

    err = err_console(quiet)
    use_threads(threads, streams=cfg.max_batch)
    models = server.load_models(list(runs or []), checkpoints=checkpoints,
                                device=torch_device(device))  # fmt: skip
    for name, model in models.items():
        err.print(f"model {name}: {model.path}", style="dim")
    try:
        server.run(models, cfg, serve_report(quiet), signals)
    finally:
        # Stopped: a further signal has nothing to stop. Ignored, not recorded: Python resets
        # handlers written in Python while it exits, and a signal then (torch takes a moment
        # to unload) would end the process by that signal instead of with status 0.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
