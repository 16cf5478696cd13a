"""`charlstm serve`."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from charlstm.cli.app import _command
from charlstm.cli.display import err_console
from charlstm.cli.options import Checkpoints, Device, Quiet, Threads, options_of
from charlstm.config import CHECKPOINTS, ServeConfig
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
    """Serve models over HTTP: OpenAI-style /v1/completions (streaming too), /score, /health."""
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
        server.run(models, cfg, _serve_report(quiet), signals)
    finally:
        # Stopped: a further signal has nothing to stop. Ignored, not recorded: Python resets
        # handlers written in Python while it exits, and a signal then (torch takes a moment
        # to unload) would end the process by that signal instead of with status 0.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def _serve_report(quiet: bool) -> Callable[[str, dict], None]:
    """What the server reports, as plain lines on stderr: where it listens, one line per
    request (status, method, path, model, tokens, seconds, seconds to the first token,
    client), errors (even --quiet)."""

    def report(event: str, data: dict) -> None:
        line = ""
        if event == "error":
            line = f"charlstm serve: {data['message']}\n{data['traceback']}"
        elif quiet:
            return
        elif event == "listening":
            key = ", API key required" if data["api_key"] else ""
            models = ", ".join(data["models"])
            line = (f"listening on {data['url']} (models: {models}; batch {data['max_batch']}, "
                    f"queue {data['queue']}{key}); Ctrl-C stops")  # fmt: skip
        elif event == "request":
            model = f" {data['model']}" if data["model"] else ""
            tokens = "" if data["tokens"] is None else f" {data['tokens']} tokens"
            first = "" if data["first"] is None else f" (first {data['first']:.3f} s)"
            line = (f"{data['status']} {data['method']} {data['path']}{model}{tokens} "
                    f"{data['seconds']:.3f} s{first} {data['client']}")  # fmt: skip
        elif event == "stopped":
            line = "stopped"
        if line:
            sys.stderr.write(line.rstrip("\n") + "\n")

    return report


# ----------------------------------------------------------------------------------- entry
