"""`charlstm visualize`."""

from __future__ import annotations

from typing import Any

from charlstm.cli.app import _command
from charlstm.cli.loading import _load, _read_texts
from charlstm.cli.options import options_of
from charlstm.display.console import err_console
from charlstm.display.reading import unknown_notes
from charlstm.display.stdout import stdout_is_terminal
from charlstm.display.units import show_focus, show_units, unit_table
from charlstm.options import VisualizeOptions


@_command
@options_of(VisualizeOptions)
def visualize(**options: Any) -> None:
    """Colour a text by what a unit of the model holds at each character (the values
    themselves into a pipe or a file)."""
    o = VisualizeOptions(**options)
    o.check()
    kind, unit = o.kind, o.unit
    form = o.output_format or ("ansi" if stdout_is_terminal() else "tsv")
    err = err_console(o.quiet)
    net = _load(o, err)
    body = _read_texts(o.text, o.encoding, o.errors, err)
    if net.tokenizer.kind == "char":
        unknown_notes(net.encode_text(body), err)
    if kind == "attention":  # where the head looks, not a unit's values
        show_focus(*net.focus(body, max_chars=o.max_chars), o.html_out, err, form)
        return
    with err.status(f"tracing {min(len(body), o.max_chars):,} characters…"):
        traced = net.trace(body, layer=o.layer, max_chars=o.max_chars)
    acts, body = traced.activations, traced.text
    o.check_traced(acts, net.config.cell)
    shown = [{"kind": kind, "unit": unit or 0}]
    if o.find:
        shown = unit_table(acts, body, traced.layer, unit, err) or shown
    show_units(body, acts, shown, traced.layer, net.config.cell, o.html_out, err, form)
