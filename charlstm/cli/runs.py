"""`charlstm runs`."""

from __future__ import annotations

import json
from typing import Any

from charlstm.cli.app import _command
from charlstm.cli.options import options_of
from charlstm.display.console import err_console
from charlstm.display.runs import removed, show_runs
from charlstm.display.stdout import write_stdout
from charlstm.options import RunsOptions


@_command
@options_of(RunsOptions)
def runs(**options: Any) -> None:
    """The runs under the checkpoints folder (newest first): corpus, tokenizer, model, steps,
    best validation, age and disk use; and taking away what is no longer wanted."""
    from charlstm.api import delete_run, list_runs, slim_run

    opts = RunsOptions(**options)
    err, checkpoints = err_console(opts.quiet), opts.checkpoints
    names = list(opts.slim or [])
    if opts.slim_finished:
        names += [r.name for r in list_runs(checkpoints) if r.finished and r.last_bytes]
    for name in opts.delete or []:
        removed(err, checkpoints / name, delete_run(name, checkpoints=checkpoints))
    for name in names:
        removed(err, checkpoints / name, slim_run(name, checkpoints=checkpoints), slimmed=True)
    if opts.delete or names:
        return
    found = list_runs(checkpoints)
    if opts.json_out:
        write_stdout("".join(json.dumps(r.to_dict()) + "\n" for r in found))
    else:
        show_runs(found, checkpoints, err)
