"""`charlstm runs`."""

from __future__ import annotations

import json
from typing import Any

from charlstm.cli.app import _command
from charlstm.cli.options import Checkpoints, Quiet, options_of
from charlstm.cli.output import _write_stdout
from charlstm.config import CHECKPOINTS
from charlstm.display.console import err_console, mb
from charlstm.display.runs import runs_table
from charlstm.options import RunsOptions


@_command
@options_of(RunsOptions)
def runs(*, checkpoints: Checkpoints = CHECKPOINTS, quiet: Quiet = False, **options: Any) -> None:
    """The runs under the checkpoints folder (newest first): corpus, tokenizer, model, steps,
    best validation, age and disk use; and taking away what is no longer wanted."""
    from charlstm.api import delete_run, list_runs, slim_run

    opts = RunsOptions(**options)
    err = err_console(quiet)
    names = list(opts.slim or [])
    if opts.slim_finished:
        names += [r.name for r in list_runs(checkpoints) if r.finished and r.last_bytes]
    for name in opts.delete or []:
        freed = delete_run(name, checkpoints=checkpoints)
        err.print(f"deleted {checkpoints / name} ({mb(freed)})")
    for name in names:
        freed = slim_run(name, checkpoints=checkpoints)
        err.print(f"slimmed {checkpoints / name}: kept best.pt, freed {mb(freed)}; it can no "
                  "longer be resumed")  # fmt: skip
    if opts.delete or names:
        return
    found = list_runs(checkpoints)
    if opts.json_out:
        _write_stdout("".join(json.dumps(r.to_dict()) + "\n" for r in found))
        return
    if not found:
        err.print(f"no runs under '{checkpoints}'; train one with: charlstm train CORPUS")
        return
    _write_stdout(runs_table(found))
    for r in found:
        if r.damaged:
            from rich.markup import escape

            err.print(f"[yellow]note:[/] {escape(f'{r.name}: {r.damaged}')}; listed from its files")
    total, resumable = sum(r.bytes for r in found), sum(r.last_bytes for r in found)
    err.print(
        f"{len(found)} runs, {mb(total)}; {mb(resumable)} of it is last.pt and tokens.npy, "
        "which only resuming needs (charlstm runs --slim-finished frees it for finished runs)",
        style="dim",
    )
