"""JSON read from a file someone else may have written: nesting bounded before it is parsed.

    value = loads(text, "its metadata's 'run'")    # ValueError with one line when refused

Python's json recurses once per level, so 100,000 nested brackets are a RecursionError (or
worse) before any check of ours could run. The depth is measured first, without recursion:
strings are cut out and the brackets left counted, in numpy. No torch, no Rust.
"""

from __future__ import annotations

import json
import re
from typing import Any

# charlstm writes at most 5 levels (a tokenizer's model.merges[i]); anything deeper is not ours.
MAX_DEPTH = 32
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def depth(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest (0 for a scalar)."""
    import numpy as np  # here: `charlstm --help` reads run folders' names, not their JSON

    skeleton = _STRING.sub("", text).encode("utf-8", "surrogatepass")
    b = np.frombuffer(skeleton, np.uint8)
    opens, closes = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)
    steps = np.isin(b, opens).astype(np.int64) - np.isin(b, closes)
    return int(np.cumsum(steps).max(initial=0))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(text: object, what: str, max_depth: int = MAX_DEPTH, strict: bool = True) -> Any:
    """`text` parsed as JSON (`strict`: without NaN or Infinity), refused with ValueError naming
    `what` when it is no text, nests deeper than `max_depth` or is not JSON."""
    if not isinstance(text, str):
        raise ValueError(f"{what} is {type(text).__name__}, not JSON text")
    if depth(text) > max_depth:
        raise ValueError(f"{what} nests deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_no_constant if strict else None)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{what} is not JSON ({str(e).splitlines()[0][:80]})") from None
