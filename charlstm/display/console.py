"""The stderr console every command writes its logs to, and small renderings they share:
sparklines, durations, megabytes, the coding progress bar."""

from __future__ import annotations

import math

from rich.console import Console


def err_console(quiet: bool = False) -> Console:
    """The console for logs, progress and errors. NO_COLOR and non-terminals are honoured by
    Rich itself; off a terminal (a log file, a pipe) lines are never wrapped, so that each
    event stays one line for grep."""
    console = Console(stderr=True, quiet=quiet, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=True, quiet=quiet, highlight=False, width=100_000)
    return console


def sparkline(values: list[float]) -> str:
    """A one-line chart of `values`, lowest ▁ to highest █; non-finite values show as a space."""
    bars = "▁▂▃▄▅▆▇█"
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
        else:
            out.append(bars[round((v - lo) / span * (len(bars) - 1)) if span > 0 else 0])
    return "".join(out)


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def mb(n: int) -> str:
    """Bytes as megabytes, as `charlstm runs` shows them."""
    return f"{n / 2**20:,.1f} MB"
