"""How `charlstm evaluate` shows what it measured: the report (lines, or one JSON object) and
the per-line or per-token scores on stdout, the speed on stderr."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from charlstm.display.stdout import write_stdout


def write_report(result: Any, seconds: float, as_json: bool, settings: dict[str, Any]) -> None:
    """A text's loss, perplexity, bits per character and tokens (api's Evaluation) as lines;
    or, `as_json`, as one object with the seconds it took and the `settings` it ran with."""
    if as_json:
        write_stdout(json.dumps({**result.to_dict(), "seconds": round(seconds, 3), **settings})
                     + "\n")  # fmt: skip
        return
    d = result.dynamic
    write_stdout(
        f"loss        {result.loss:.4f} nats/token\n"
        f"perplexity  {result.perplexity:.3f}\n"
        f"bits/char   {result.bits_per_char:.4f}\n"
        f"tokens      {result.tokens:,}\n"
        + (f"dynamic     {d['rule']}, segment {d['segment']}, lr {d['lr']:g}, decay "
           f"{d['decay']:g}\n" if d else "")
    )  # fmt: skip


def write_scores(rows: Iterable[dict[str, Any]]) -> None:
    """--per-line's or --per-token's scores: one JSON object per line."""
    write_stdout("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def speed(tokens: int, seconds: float) -> str:
    """How fast the model read the text (stderr)."""
    return f"{tokens / seconds:,.0f} tokens/s"
