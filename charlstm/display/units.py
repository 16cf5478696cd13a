"""`charlstm visualize`'s terminal half: the units that track properties of the text."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from charlstm.display.stdout import StdoutConsole, flush_pending
from charlstm.errors import CharlstmError


def unit_table(acts: dict, body: str, layer: int, unit: int | None, err: Console) -> list[dict]:
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


def show_units(
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
                flush_pending(pending, "")
        flush_pending(pending, "")
    # Colours also into a pipe when asked for (--format ansi); NO_COLOR still drops them.
    out = StdoutConsole(file=sys.stdout, highlight=False, force_terminal=form == "ansi")
    for label, values, k in rows if form == "ansi" else ():
        out.print(label, style="bold", markup=False)
        end = "" if body.endswith("\n") else "\n"  # the text's own last newline ends it
        out.print(render_terminal(body, values, kind=k), soft_wrap=True, end=end)
    if html_out is not None:
        title = f"charlstm · {cell} · layer {layer}"
        page = render_html(body, [r[:2] for r in rows], title, kinds=[r[2] for r in rows])
        _write_page(html_out, page, err)


def _write_page(html_out: Path, page: str, err: Console) -> None:
    try:
        html_out.write_text(page, encoding="utf-8")
    except OSError as e:
        raise CharlstmError(f"cannot write {html_out}: {e.strerror or e}") from None
    err.print(f"wrote {html_out}", style="dim")


def show_focus(body: str, found: object, html_out: Path | None, err: Console, form: str) -> None:
    """Where --attention's head looks (evaluation/focus.py): a line per character on stdout
    (`form` ansi, tsv or json), and with --html a page where hovering a character lights up
    its sources."""
    from charlstm.evaluation.focus import Focus, focus_html, focus_lines

    assert isinstance(found, Focus)
    pending: list[str] = []
    for line in focus_lines(body, found, form):
        pending.append(line + "\n")
        if len(pending) >= 1000:
            flush_pending(pending, "")
    flush_pending(pending, "")
    if html_out is not None:
        _write_page(html_out, focus_html(body, found, "charlstm · where the head looks"), err)
