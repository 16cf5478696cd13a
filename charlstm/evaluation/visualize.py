"""A window into what the cells remember: per-character activations, simple text properties,
the units that track them, and colourings of the text by a unit (terminal and HTML).

    acts = trace(model, ids, layer=-1)       # {"hidden": (T, H), "cell": (T, H), "forget": ...}
    props = properties(text)                 # {"in_quotes": (T,), "in_parens": (T,), ...}
    best = find_units(acts, props, top=5)    # [{"kind", "unit", "property", "correlation"}]
    render_terminal(text, acts["cell"][:, best[0]["unit"]], kind="cell")   # rich.text.Text
    render_html(text, [(label, values)], title, kinds=["cell"])           # one HTML page
    value_lines(text, [("cell 3", values)], "tsv")   # the values, a line per character

`trace` runs each cell's own step (cells/<cell>.py) over torch operations that record what the
step shows (model/ops.RecordingOps), instead of the fused modules, which never expose their
gates: a Python loop, one step per character, plain rather than fast. Nothing here prints;
the CLI decides where the text and pages go.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from rich.text import Text
from torch import Tensor

from charlstm.cells import CELLS
from charlstm.cells.base import bind, fact, gate_count
from charlstm.model.language_model import LanguageModel
from charlstm.model.ops import RecordingOps
from charlstm.model.weights import step_layers

# Activations that are sigmoid outputs in [0, 1]; the rest (hidden, cell) are centred on 0.
GATES = ("forget", "input", "output", "update", "reset")
PROPERTIES = ("in_quotes", "in_parens", "line_position", "word_start")
# What each state part (cells' STATE) is called here.
STATE_KINDS = {"h": "hidden", "c": "cell", "n": "normalizer", "m": "stabilizer"}

# ------------------------------------------------------------------------------------- trace


def _trace_layer(cell_name: str, layer: dict[str, Tensor], x: Tensor) -> dict[str, Tensor]:
    """One layer (its step-layout weights) over one sequence x (T, I), from a zero state ->
    records, each (T, H): the state after each step and what the cell's step shows."""
    cell = CELLS[cell_name]
    p = bind(cell, layer)
    # The step's input: x itself for an INPUT_GATED cell, else its projection zx (T, G·H).
    inputs = x if fact(cell, "INPUT_GATED") else torch.addmm(layer["b"], x, layer["w_x"])
    hidden = layer["b"].shape[0] // gate_count(cell)
    state = tuple(x.new_zeros(1, hidden) for _ in cell.STATE)  # one row
    rec: dict[str, list[Tensor]] = {}
    for x_t in inputs:
        ops = RecordingOps()
        state = tuple(cell.step(ops, p, x_t[None], state))
        values = {**{STATE_KINDS[n]: v for n, v in zip(cell.STATE, state, strict=True)},
                  **ops.shown}  # fmt: skip
        for name, v in values.items():
            rec.setdefault(name, []).append(v[0])
    return {name: torch.stack(vs) for name, vs in rec.items()}


def trace(model: LanguageModel, ids: Tensor, layer: int = -1) -> dict[str, np.ndarray]:
    """Run ids (T,) through the model from a zero state; layer `layer`'s activations, each (T, H).

    Keys: "hidden" (h_t) for every cell; "cell" (c_t) and the gates "forget", "input",
    "output" for the LSTMs (coupled's input is 1 − forget; slstm's are its stabilised gates
    f' and i', in [0, 1]), and slstm's "normalizer" n_t and "stabilizer" m_t; "update" (the
    share of the new candidate in h_t, textbook convention) and "reset" for gru. Layer k > 0
    reads layer k−1's hidden states, as in eval mode (no dropout). Negative `layer` counts
    from the top.
    """
    cfg = model.cfg
    if not -cfg.num_layers <= layer < cfg.num_layers:
        raise ValueError(f"layer {layer} out of range for a {cfg.num_layers}-layer model")
    target = layer % cfg.num_layers
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if ids.numel() == 0:
        raise ValueError("nothing to trace: no ids")
    device = next(model.parameters()).device
    with torch.no_grad():
        layers = step_layers(model.rnn, cfg.cell)
        x = model.embed(ids.to(device))  # (T, E)
        for k in range(target + 1):
            rec = _trace_layer(cfg.cell, layers[k], x)
            x = rec["hidden"]  # (T, H): the next layer's input
    return {name: t.float().cpu().numpy() for name, t in rec.items()}


# -------------------------------------------------------------------------------- properties


def properties(text: str) -> dict[str, np.ndarray]:
    """Per-character properties of `text`, each a float array (len(text),).

    in_quotes      1 inside "..." or '...', the quote marks included. A ' opens a quote only
                   at the start of a word and closes an open one only at the end of a word,
                   so the apostrophes of don't and the dogs' bowl stay out. A blank line ends an
                   unclosed quote (prose rarely carries one across paragraphs).
    in_parens      1 inside (...) or [...], brackets included; nesting allowed.
    line_position  the column (0 at line start), divided by the longest line's length.
    word_start     1 on the first letter of a word.
    """
    n = len(text)
    in_quotes = np.zeros(n)
    in_parens = np.zeros(n)
    line_position = np.zeros(n)
    word_start = np.zeros(n)
    double = single = False
    depth = 0
    col = 0
    for t, ch in enumerate(text):
        prev = text[t - 1] if t > 0 else " "
        nxt = text[t + 1] if t + 1 < n else " "
        # Quotes: the marks themselves count as inside.
        if ch == '"':
            was = double
            double = not double
            in_quotes[t] = 1.0 if (was or double) else 0.0
        elif ch == "'":
            opens = not single and not prev.isalnum() and not nxt.isspace()
            closes = single and not prev.isspace() and not nxt.isalnum()
            if opens:
                single = True
            in_quotes[t] = float(double or single)
            if closes:
                single = False
        else:
            if ch == "\n" and prev == "\n":  # a blank line ends any quote left open
                double = single = False
            in_quotes[t] = float(double or single)
        # Brackets: counted as inside, both the opening and the closing one.
        if ch in "([":
            depth += 1
        in_parens[t] = float(depth > 0)
        if ch in ")]":
            depth = max(depth - 1, 0)
        line_position[t] = col
        col = 0 if ch == "\n" else col + 1
        # Word starts: a letter after a non-letter, except after an apostrophe inside a word.
        if ch.isalpha():
            inside_word = prev.isalnum() or (prev == "'" and t >= 2 and text[t - 2].isalpha())
            word_start[t] = float(not inside_word)
    longest = max((len(line) for line in text.split("\n")), default=0)
    line_position /= max(longest, 1)
    return {
        "in_quotes": in_quotes,
        "in_parens": in_parens,
        "line_position": line_position,
        "word_start": word_start,
    }


# -------------------------------------------------------------------------------- find_units


def find_units(
    activations: dict[str, np.ndarray], props: dict[str, np.ndarray], top: int = 5
) -> list[dict]:
    """The `top` (kind, unit) pairs most correlated with a property: the best unit of each
    property first (strongest first), then the others by strength.

    Each is {"kind", "unit", "property", "correlation"} with the signed Pearson r; they
    are ranked by |r|. A unit or property that is constant over the text has no
    correlation and is skipped. Activations (T, H) and properties (T,) must share T.
    """
    found: list[dict] = []
    for prop, p in props.items():
        p = np.asarray(p, dtype=np.float64)
        p_dev = p - p.mean()
        p_norm = np.sqrt((p_dev**2).sum())
        if p_norm < 1e-12:
            continue
        for kind, a in activations.items():
            a = np.asarray(a, dtype=np.float64)
            if a.ndim != 2 or a.shape[0] != p.shape[0]:
                raise ValueError(
                    f"{kind!r} has shape {a.shape}, property {prop!r} has {p.shape[0]} positions"
                )
            a_dev = a - a.mean(axis=0)  # (T, H)
            a_norm = np.sqrt((a_dev**2).sum(axis=0))  # (H,)
            ok = a_norm > 1e-12 * max(1.0, float(np.abs(a).max()))
            r = (p_dev @ a_dev) / np.where(ok, a_norm * p_norm, 1.0)  # (H,)
            for unit in np.flatnonzero(ok):
                found.append(
                    {
                        "kind": kind,
                        "unit": int(unit),
                        "property": prop,
                        "correlation": float(np.clip(r[unit], -1.0, 1.0)),
                    }
                )
    found.sort(key=lambda d: -abs(d["correlation"]))
    # Each property's best unit first, so one strong property (word starts, say) cannot hide
    # the others; then the rest by strength.
    champions: dict[str, dict] = {}
    for d in found:
        champions.setdefault(d["property"], d)
    firsts = list(champions.values())
    return (firsts + [d for d in found if not any(d is f for f in firsts)])[:top]


# --------------------------------------------------------------------------------- rendering


def normalise(values: np.ndarray, kind: str | None = None) -> np.ndarray:
    """Values onto [−1, 1] for the colour scale.

    Gates (kind in GATES) live in [0, 1]: 0.5 goes to white, 0 to blue and 1 to red.
    Anything else is centred on 0: hidden states are already in [−1, 1]; cells can grow
    past it, and are then divided by their largest magnitude.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if kind in GATES:
        return np.clip(2.0 * v - 1.0, -1.0, 1.0)
    peak = float(np.abs(v).max()) if v.size else 0.0
    return v / peak if peak > 1.0 else v


def colour(x: float) -> tuple[int, int, int]:
    """A diverging scale for x in [−1, 1]: blue (−1) … white (0) … red (+1)."""
    x = float(np.clip(x, -1.0, 1.0))
    # Ends a little softer than pure blue/red so black text on them stays readable.
    end = (214, 39, 40) if x >= 0 else (31, 119, 180)
    a = abs(x)
    return tuple(round(255 + (e - 255) * a) for e in end)  # type: ignore[return-value]


def _shown(ch: str) -> str:
    """How one character is drawn: a newline as a visible ↵ before the line break."""
    return "↵\n" if ch == "\n" else ch


def _check_lengths(text: str, values: np.ndarray) -> None:
    if len(values) != len(text):
        raise ValueError(f"{len(values)} values for {len(text)} characters")


def render_terminal(text: str, values: np.ndarray, kind: str | None = None) -> Text:
    """`text` with each character's background coloured by its value (T,), for a Rich console.

    `kind` is the activation's kind (see `normalise`): gates are drawn around 0.5.
    Newlines stay newlines, drawn as a coloured ↵ first so their value shows too.
    """
    v = normalise(values, kind)
    _check_lengths(text, v)
    out = Text()
    for ch, x in zip(text, v, strict=True):
        r, g, b = colour(x)
        style = f"#000000 on #{r:02x}{g:02x}{b:02x}"
        if ch == "\n":
            out.append("↵", style=style)
            out.append("\n")
        else:
            out.append(ch, style=style)
    return out


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.2em; }
.legend { font-size: 0.85em; margin-bottom: 1.2em; }
.legend .bar { display: inline-block; width: 12em; height: 0.9em; vertical-align: middle;
  background: linear-gradient(to right, rgb(31,119,180), #fff, rgb(214,39,40));
  border: 1px solid #ccc; margin: 0 0.4em; }
.row { margin-bottom: 1.5em; }
.label { font-size: 0.9em; font-weight: 600; margin: 0 0 0.3em; }
.text { font-family: ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace;
  white-space: pre-wrap; word-break: break-all; line-height: 1.45; font-size: 14px;
  background: #fff; border: 1px solid #ddd; padding: 0.6em; color: #000;
  max-height: 22em; overflow: auto; resize: vertical; }
.text span:hover { outline: 1px solid #000; }
.text .nl { color: #444; }
"""


def render_html(
    text: str,
    rows: list[tuple[str, np.ndarray]],
    title: str,
    kinds: Sequence[str | None] | None = None,
) -> str:
    """One self-contained HTML page: `text` once per row, coloured by that row's values (T,).

    Each character is a <span> with its background colour and a title holding its value
    to 3 decimals (hover to read it). `kinds[j]` is row j's activation kind, so gates are
    coloured around 0.5 (see `normalise`). No scripts, fonts or links: it opens offline.
    """
    if kinds is None:
        kinds = [None] * len(rows)
    if len(kinds) != len(rows):
        raise ValueError(f"{len(kinds)} kinds for {len(rows)} rows")
    parts = [
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n",
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n",
        f"<h1>{html.escape(title)}</h1>\n",
        "<div class='legend'>low / closed<span class='bar'></span>high / open"
        " &middot; hover a character for its value</div>\n",
    ]
    for (label, values), kind in zip(rows, kinds, strict=True):
        raw = np.asarray(values, dtype=np.float64).reshape(-1)
        _check_lengths(text, raw)
        v = normalise(raw, kind)
        spans = []
        for ch, x, value in zip(text, v, raw, strict=True):
            r, g, b = colour(x)
            cls = " class='nl'" if ch == "\n" else ""
            spans.append(
                f"<span{cls} style='background:#{r:02x}{g:02x}{b:02x}' title='{value:.3f}'>"
                f"{html.escape(_shown(ch))}</span>"
            )
        parts.append(
            f"<div class='row'>\n<div class='label'>{html.escape(label)}</div>\n"
            f"<div class='text'>{''.join(spans)}</div>\n</div>\n"
        )
    parts.append("</body>\n</html>\n")
    return "".join(parts)


FORMATS = ("ansi", "tsv", "json")  # `visualize --format`: colours for a terminal, or the values
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def value_lines(text: str, columns: Sequence[tuple[str, np.ndarray]], form: str) -> Iterator[str]:
    """The values of the shown units at each character, for a pipe or a file: one line per
    character (each ending in a newline). "tsv": a header `position char NAME…`, then the
    position (from 0), the character (\\t, \\n, \\r and \\\\ escaped) and the values; "json":
    {"position", "char", NAME: value, …} per line. Columns of one name are one column."""
    named = dict(columns)  # one kind and unit: the same values
    for values in named.values():
        _check_lengths(text, values)
    names, table = list(named), np.stack(list(named.values()), axis=1)  # (T, units)
    if form == "tsv":
        yield "\t".join(["position", "char", *names]) + "\n"
        for i, (ch, row) in enumerate(zip(text, table, strict=True)):
            shown = _ESCAPES.get(ch, ch)
            yield "\t".join([str(i), shown, *(f"{v:.6g}" for v in row)]) + "\n"
    elif form == "json":
        for i, (ch, row) in enumerate(zip(text, table, strict=True)):
            values = {n: float(f"{v:.6g}") for n, v in zip(names, row, strict=True)}
            yield json.dumps({"position": i, "char": ch, **values}, ensure_ascii=False) + "\n"
    else:
        raise ValueError(f"no value format {form!r}")
