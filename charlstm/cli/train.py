"""`charlstm train`."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import typer

from charlstm.cli.app import _command
from charlstm.cli.options import of, options_of
from charlstm.display.console import err_console
from charlstm.display.reading import stdin_note
from charlstm.display.stdout import write_stdout
from charlstm.display.training import TrainDisplay, print_summary
from charlstm.errors import EXIT_INTERRUPTED
from charlstm.options import TrainOptions, TrainOutput


@_command
@options_of(TrainOptions, TrainOutput)
def train(ctx: typer.Context, **options: Any) -> None:
    """Train a model on CORPUS; checkpoints go to [bold]checkpoints/RUN/[/] (best.pt, last.pt,
    metrics.jsonl). Stops at --budget, --steps or --epochs, whichever comes first; Ctrl-C saves
    last.pt and stops (resume with --resume).

    Several processes: [bold]torchrun --nproc-per-node N -m charlstm train ...[/] trains with
    DistributedDataParallel (the B streams split among the ranks; rank 0 prints and saves)."""
    # The budget is the whole run: from the process's start where this command is the process
    # (Python and the imports included: main() passes it), else from here.
    started = (ctx.obj or {}).get("process_start", time.perf_counter())
    opts = TrainOptions(**{**of(TrainOptions, options), "corpus": options["corpus"] or []})
    out = TrainOutput(**of(TrainOutput, options))
    err = err_console(out.quiet)
    stdin_note(opts.corpus, err)
    from charlstm.api import train_options  # imports torch: after the options are checked

    display = TrainDisplay(err)
    stop = _StopFlag()
    previous = signal.signal(signal.SIGINT, stop.handle)
    try:
        summary = train_options(opts, report=display, should_stop=stop.is_set, started=started)
    finally:
        display.close()
        signal.signal(signal.SIGINT, previous)
    if summary["rank"] != 0:
        return
    if stop.is_set():
        summary["stop_reason"] = "interrupted"
    print_summary(err, summary)
    if out.json_out:
        write_stdout(json.dumps(summary) + "\n")
    if stop.is_set():
        resume = f"charlstm train --resume {summary['run_dir']}"
        err.print(f"interrupted: last.pt saved; continue with: {resume}")
        raise typer.Exit(EXIT_INTERRUPTED)


class _StopFlag:
    """First Ctrl-C asks the loop to save and stop; a second one stops at once."""

    def __init__(self) -> None:
        self._set = False

    def handle(self, signum: int, frame: Any) -> None:
        self._set = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def is_set(self) -> bool:
        return self._set
