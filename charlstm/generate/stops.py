"""Stop texts, matched once for every door (sample, the API, chat, the server's rows).

    stops = StopMatcher(("\\n\\n", "THE END"))
    emit, stopped = stops.push(piece)   # text safe to send now; True: a stop text came (cut)
    tail = stops.flush()                # the text held back, at the end of a sample

The rule: text is held back only while it may still be the start of a stop text (the
longest suffix that begins one), so a stream without stops is never delayed, and a stop text
split across tokens is still found. The stop text itself is never sent.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """The text of one row, up to the first of `stops` (see the module docstring)."""

    __slots__ = ("stops", "held")

    def __init__(self, stops: Sequence[str]) -> None:
        assert all(stops), "a stop text is never empty"
        self.stops = tuple(stops)
        self.held = ""  # text that might begin a stop text: sent once it cannot

    def push(self, piece: str) -> tuple[str, bool]:
        """(text to send now, whether a stop text came: then the row ends here)."""
        text = self.held + piece
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.held = ""
            return text[:cut], True
        keep = prefix_start(text, self.stops)
        self.held = text[keep:]
        return text[:keep], False

    def flush(self) -> str:
        """The text held back (no stop text can finish now)."""
        held, self.held = self.held, ""
        return held


def prefix_start(text: str, stops: Sequence[str]) -> int:
    """Where the longest suffix of `text` that begins some stop text starts (len: none)."""
    start = len(text)
    for s in stops:
        i = text.find(s[0], max(0, len(text) - len(s) + 1))
        while 0 <= i < start:
            if s.startswith(text[i:]):
                start = i
                break
            i = text.find(s[0], i + 1)
    return start

