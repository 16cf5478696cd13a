"""Turn text into token ids and back; a tokenizer saves itself as a plain dict (JSON-able).

The character tokenizer's vocabulary is every Unicode code point of the corpus (not bytes), so
Chinese, accents and emoji are single tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError


class TokenizerError(CharlstmError):
    """Text the tokenizer cannot encode; the message is one line for the user."""


class CharTokenizer:
    """One token per Unicode code point seen in the corpus."""

    kind = "char"

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars):
            raise ValueError("duplicate characters in vocabulary")
        self.chars = chars
        # Sorted code points allow a vectorised encode with searchsorted (no Python loop per char).
        order = np.argsort(np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32), kind="stable")
        self._sorted_points = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32)[order]
        self._sorted_ids = order.astype(np.int64)
        self._pieces = list(chars)

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def id_dtype(self) -> np.dtype:
        return np.dtype(np.uint16 if self.vocab_size <= 2**16 else np.uint32)

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` outside the vocabulary, in order of appearance."""
        known = set(self.chars)
        return list(dict.fromkeys(ch for ch in text if ch not in known))

    def encode(self, text: str, *, skip_unknown: bool = False) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        pos = np.searchsorted(self._sorted_points, points)
        pos = np.minimum(pos, len(self._sorted_points) - 1)
        found = self._sorted_points[pos] == points
        if not found.all():
            if not skip_unknown:
                missing = "".join(self.unknown(text)[:20])
                raise TokenizerError(f"characters the model never saw: {missing!r}")
            pos = pos[found]
        return self._sorted_ids[pos].astype(self.id_dtype)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self._pieces[int(i)] for i in ids)

    def piece(self, token_id: int) -> str:
        """The text of one token, for streaming output."""
        return self._pieces[token_id]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": self.chars}


def tokenizer_from_dict(d: dict[str, Any]) -> CharTokenizer:
    if d.get("kind") == "char":
        return CharTokenizer(d["chars"])
    raise TokenizerError(f"unknown tokenizer kind {d.get('kind')!r}")
