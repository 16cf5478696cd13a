"""`charlstm serve`."""

from __future__ import annotations

import signal
from typing import Any

from charlstm.cli.app import _command
from charlstm.cli.options import of, options_of
from charlstm.config import ServeConfig
from charlstm.display.console import err_console
from charlstm.display.serving import serve_report
from charlstm.errors import CharlstmError
from charlstm.options import ServeOptions


@_command
@options_of(ServeConfig, ServeOptions)
def serve(**options: Any) -> None:
    """Serve models over HTTP: OpenAI-style /v1/completions and /v1/chat/completions (streaming
    too), /score, /health."""
    # From here on SIGINT and SIGTERM only stop the server (status 0), even while models load.
    signals: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _frame: signals.append(s))
    cfg = ServeConfig(**{k: v for k, v in of(ServeConfig, options).items() if v is not None})
    opts = ServeOptions(**of(ServeOptions, options))
    try:  # serve/ is built on the API, beside it
        from charlstm.serve import server
    except ImportError as e:
        raise CharlstmError(
            f"serve needs the [serve] extra ({e.name} is missing): pip install 'charlstm[serve]'"
        ) from None
    from charlstm.api import torch_device, use_threads

    err = err_console(opts.quiet)
    use_threads(opts.threads, streams=cfg.max_batch)
    models = server.load_models(list(opts.runs or []), checkpoints=opts.checkpoints,
                                device=torch_device(opts.device))  # fmt: skip
    for name, model in models.items():
        err.print(f"model {name}: {model.path}", style="dim")
    try:
        server.run(models, cfg, serve_report(opts.quiet), signals)
    finally:
        # Stopped: a further signal has nothing to stop. Ignored, not recorded: Python resets
        # handlers written in Python while it exits, and a signal then (torch takes a moment
        # to unload) would end the process by that signal instead of with status 0.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
