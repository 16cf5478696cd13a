"""`charlstm runs`."""

from __future__ import annotations

import json
from typing import Annotated

from charlstm.cli.app import _command
from charlstm.cli.options import Checkpoints, Quiet, _flag, _opt
from charlstm.cli.output import _write_stdout
from charlstm.config import CHECKPOINTS
from charlstm.display.console import err_console, mb
from charlstm.display.runs import runs_table


@_command
def runs(
    delete: Annotated[
        list[str] | None, _opt("Delete this run's folder (give it again for more runs).")
    ] = None,
    slim: Annotated[
        list[str] | None,
        _opt(
            "Keep only this run's best.pt (all that sampling needs) and delete last.pt and "
            "tokens.npy (only resuming needs them: about three quarters of a run's disk)."
        ),
    ] = None,
    slim_finished: Annotated[
        bool, _flag("--slim-finished", help="Slim every run that reached its limits.")
    ] = False,
    json_out: Annotated[bool, _flag("--json", help="One JSON object per run per line.")] = False,
    checkpoints: Checkpoints = CHECKPOINTS,
    quiet: Quiet = False,
) -> None:
    """The runs under the checkpoints folder (newest first): corpus, tokenizer, model, steps,
    best validation, age and disk use; and taking away what is no longer wanted."""
    from charlstm.api import delete_run, list_runs, slim_run

    err = err_console(quiet)
    names = list(slim or [])
    if slim_finished:
        names += [r.name for r in list_runs(checkpoints) if r.finished and r.last_bytes]
    for name in delete or []:
        freed = delete_run(name, checkpoints=checkpoints)
        err.print(f"deleted {checkpoints / name} ({mb(freed)})")
    for name in names:
        freed = slim_run(name, checkpoints=checkpoints)
        err.print(f"slimmed {checkpoints / name}: kept best.pt, freed {mb(freed)}; it can no "
                  "longer be resumed")  # fmt: skip
    if delete or names:
        return
    found = list_runs(checkpoints)
    if json_out:
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
