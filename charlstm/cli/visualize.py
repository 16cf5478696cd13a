"""`charlstm visualize`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from charlstm.cli.app import _command
from charlstm.cli.display import err_console
from charlstm.cli.options import (
    Checkpoints,
    DecodeErrors,
    Encoding,
    ModelPath,
    Quiet,
    Texts,
    Threads,
    VisualFormat,
    _complete_activation,
    _flag,
    _opt,
)
from charlstm.cli.output import (
    _flush_pending,
    _load,
    _note_unknown,
    _read_texts,
    _stdout_is_terminal,
    _StdoutConsole,
)
from charlstm.config import CHECKPOINTS
from charlstm.errors import CharlstmError, UsageError


@_command
def visualize(
    text: Texts,
    model: ModelPath = None,
    layer: Annotated[
        int | None, _opt("Layer to trace, counting from 0. Default: the last.")
    ] = None,
    kind: Annotated[
        str,
        typer.Option(
            help="What to colour by: hidden, cell, forget, input or output (gru: update, reset; "
            "slstm also: normalizer, stabilizer).",
            autocompletion=_complete_activation,
        ),
    ] = "cell",
    unit: Annotated[
        int | None, _opt("Unit to show. Default: the best 5 with --find, else 0.")
    ] = None,
    find: Annotated[
        bool,
        _flag(
            "--find",
            help="Rank every unit and gate by correlation with simple properties of the text (in "
            "quotes, in brackets, line position, word starts) and show the best 5.",
        ),
    ] = False,
    html_out: Annotated[
        Path | None,
        _opt(
            "Also write the shown units as one self-contained HTML page (hover for values).",
            "--html",
        ),
    ] = None,
    max_chars: Annotated[
        int,
        typer.Option(help="Trace only the first N characters (one step each: slow on long text)."),
    ] = 2000,
    output_format: Annotated[
        VisualFormat | None,
        _opt(
            "What stdout gets: ansi (the text coloured by each unit), tsv (a header, then one "
            "row per character: position, the character escaped, each unit's value) or json "
            "(one object per character). Default: ansi on a terminal, tsv otherwise.",
            "--format",
        ),
    ] = None,
    encoding: Encoding = "utf-8",
    errors: DecodeErrors = "strict",
    checkpoints: Checkpoints = CHECKPOINTS,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Colour a text by what a unit of the model holds at each character (the values
    themselves into a pipe or a file)."""
    form = output_format or ("ansi" if _stdout_is_terminal() else "tsv")
    err = err_console(quiet)
    net = _load(model, threads, err, checkpoints=checkpoints)
    body = _read_texts(text, encoding, errors, err)
    if net.tokenizer.kind == "char":
        _note_unknown(net.encode_text(body), err)
    with err.status(f"tracing {min(len(body), max_chars):,} characters…"):
        traced = net.trace(body, layer=layer, max_chars=max_chars)
    acts, body = traced.activations, traced.text
    if kind not in acts:
        raise UsageError(
            f"--kind: {net.config.cell} layers have no {kind!r}; choose one of {', '.join(acts)}"
        )
    hidden = acts[kind].shape[1]
    if unit is not None and not 0 <= unit < hidden:
        raise UsageError(f"--unit must be between 0 and {hidden - 1}, got {unit}")
    shown = [{"kind": kind, "unit": unit or 0}]
    if find:
        shown = _find(acts, body, traced.layer, unit, err) or shown
    _show_units(body, acts, shown, traced.layer, net.config.cell, html_out, err, form)


def _find(acts: dict, body: str, layer: int, unit: int | None, err: Console) -> list[dict]:
    """Rank the units by how well they track properties of the text; print the best 5 (stderr)
    and return them unless a --unit was given."""
    from rich.table import Table

    from charlstm.api import units_tracking

    best = units_tracking(acts, body, top=5)
    table = Table(title=f"layer {layer}: units that track the text", title_style="bold")
    for col in ("kind", "unit", "property", "r"):
        table.add_column(col, justify="right" if col in ("unit", "r") else "left")
    for b in best:
        table.add_row(b["kind"], str(b["unit"]), b["property"], f"{b['correlation']:+.3f}")
    err.print(table if best else "no unit varies with any property of this text")
    return best if unit is None else []


def _show_units(
    body: str, acts: dict, shown: list[dict], layer: int, cell: str, html_out: Path | None,
    err: Console, form: str = "ansi",
) -> None:  # fmt: skip
    """The text coloured by each shown unit on stdout (or their values, `form` tsv or json);
    and the coloured text as a page with --html."""
    from charlstm.evaluation.visualize import render_html, render_terminal, value_lines

    rows = []
    for s in shown:
        label = f"layer {layer} · {s['kind']} · unit {s['unit']}"
        if "correlation" in s:
            label += f" · r={s['correlation']:+.2f} with {s['property']}"
        rows.append((label, acts[s["kind"]][:, s["unit"]], s["kind"]))
    if form != "ansi":
        columns = [(f"{s['kind']} {s['unit']}", values) for s, (_, values, _) in zip(shown, rows,
                   strict=True)]  # fmt: skip
        pending: list[str] = []
        for line in value_lines(body, columns, form):
            pending.append(line)
            if len(pending) >= 1000:
                _flush_pending(pending, "")
        _flush_pending(pending, "")
    # Colours also into a pipe when asked for (--format ansi); NO_COLOR still drops them.
    out = _StdoutConsole(file=sys.stdout, highlight=False, force_terminal=form == "ansi")
    for label, values, k in rows if form == "ansi" else ():
        out.print(label, style="bold", markup=False)
        end = "" if body.endswith("\n") else "\n"  # the text's own last newline ends it
        out.print(render_terminal(body, values, kind=k), soft_wrap=True, end=end)
    if html_out is not None:
        title = f"charlstm · {cell} · layer {layer}"
        page = render_html(body, [r[:2] for r in rows], title, kinds=[r[2] for r in rows])
        try:
            html_out.write_text(page, encoding="utf-8")
        except OSError as e:
            raise CharlstmError(f"cannot write {html_out}: {e.strerror or e}") from None
        err.print(f"wrote {html_out}", style="dim")


# ----------------------------------------------------------------------------------- runs
