"""What every tokenizer shares: its error, the default sizes, the unknown-word placeholder, the
pre-token pattern, the stream decoders that turn sampled ids into printable text, and cutting
a text into pieces that encode alike whole or apart (tokenizer.py, hf_tokenizers.py)."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from typing import Any, Literal, Protocol

import numpy as np

from charlstm.config import DEFAULT_MIN_FREQUENCY, DEFAULT_VOCAB, TOKENIZERS  # noqa: F401 (re-exported)
from charlstm.errors import CharlstmError

KINDS = TOKENIZERS
# What an out-of-vocabulary word decodes to (U+2047 DOUBLE QUESTION MARK, as sentencepiece).
UNK_PLACEHOLDER = "\u2047"
# The word vocabulary holds two unknown tokens, so that decoding keeps the text's spacing: id 0
# for an unknown token without a leading space (at the start of a line), id 1 for one with it.
# Their keys end in a tab right after a non-space character, which no pre-token can contain, so
# a literal "<unk>" or "⁇" in the corpus stays an ordinary word; the decoder drops the tab.
# They are plain vocabulary entries, not "special" added tokens, because tokenizers matches added
# tokens in the raw text before pre-tokenization.
UNK_KEYS = (UNK_PLACEHOLDER + "\t", " " + UNK_PLACEHOLDER + "\t")

# GPT-2's trick: a run of whitespace leaves its last space to the next word, so " = Valkyria
# Chronicles III = \n" becomes " =", " Valkyria", " Chronicles", " III", " =", " \n".
WORD_PATTERN = r" ?\S+|\s+(?!\S)|\s+"
# The same pattern for Python's `re`, whose \s also matches U+001C..U+001F (Oniguruma's, used by
# tokenizers, does not): spell out Oniguruma's whitespace so both cut text identically.
_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
PRE_TOKEN_RE = re.compile(f" ?[^{_WS}]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+")
# Where every pre-tokenizer here splits anyway: a space between two non-space characters.
_SAFE_CUT_RE = re.compile(f"(?<=[^{_WS}]) (?=[^{_WS}])")

OnUnknown = Literal["error", "skip", "token"]
# Characters handed to Rust per encode_batch call: enough pieces to keep every core busy.
BATCH_CHARS = 8 << 20


class TokenizerError(CharlstmError):
    """Text the tokenizer cannot encode; the message is one line for the user."""


class StreamDecoder(Protocol):
    """Turns sampled ids, one at a time, into text ready to print."""

    def push(self, token_id: int) -> str: ...

    def flush(self) -> str: ...


class PieceStream:
    """Stream decoder for tokenizers whose every token is whole text (char, word)."""

    def __init__(self, tokenizer: Any) -> None:  # one with piece(id): char, word
        self._piece = tokenizer.piece

    def push(self, token_id: int) -> str:
        return self._piece(token_id)

    def flush(self) -> str:
        return ""


class ByteStream:
    """Stream decoder for byte-level tokens: holds back a character split across tokens.

    Invalid UTF-8 becomes U+FFFD, as in `decode`; a character still unfinished at the end is
    left out by `flush()` (a sample cut short by its length mid-character ends before it), so
    the pieces are `decode(ids)` less that. Sampling never makes invalid UTF-8 (choice.py).
    """

    def __init__(self, token_bytes: list[bytes]) -> None:
        self._bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self._bytes[token_id])

    def flush(self) -> str:
        self._utf8.reset()  # all it holds is the start of a character (invalid bytes are out)
        return ""


def resolve_mode(skip_unknown: bool, on_unknown: OnUnknown | None) -> OnUnknown:
    if on_unknown is None:
        return "skip" if skip_unknown else "error"
    if on_unknown not in ("error", "skip", "token"):
        raise ValueError(f"on_unknown must be 'error', 'skip' or 'token', not {on_unknown!r}")
    if skip_unknown and on_unknown != "skip":
        raise ValueError(f"skip_unknown=True contradicts on_unknown={on_unknown!r}")
    return on_unknown


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def code_points(text: str) -> np.ndarray:
    """The Unicode code point of each character, (len(text),): bytes for ASCII text (the common
    case, 4x less memory), else uint32."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def split_for_encoding(text: str, approx_size: int = 1 << 20) -> list[str]:
    """Cut `text` into pieces of about `approx_size` characters for batch encoding.

    Cuts fall only right before a space between two non-space characters, where the word and
    BPE pre-tokenizers split anyway, so the encodings of the pieces, concatenated, equal the
    encoding of the whole text. A piece may be longer when no such space comes soon (text
    without spaces stays whole).
    """
    if approx_size < 1:
        raise ValueError("approx_size must be positive")
    pieces, start = [], 0
    while len(text) - start > approx_size:
        cut = _SAFE_CUT_RE.search(text, start + approx_size)
        if cut is None:
            break
        pieces.append(text[start : cut.start()])
        start = cut.start()
    pieces.append(text[start:])
    return pieces


def safe_cut(text: str, tail: int = 1 << 16) -> int:
    """The last place in the final `tail` characters of `text` where `split_for_encoding` may
    cut (a space between two non-space characters), or -1 when there is none."""
    last = -1
    for m in _SAFE_CUT_RE.finditer(text, max(0, len(text) - tail)):
        last = m.start()
    return last


def batches(chunks: Iterable[str], batch_chars: int) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for chunk in chunks:
        batch.append(chunk)
        size += len(chunk)
        if size >= batch_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def unknown_message(what: str, names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:10])
    more = f" and {len(names) - 10:,} more" if len(names) > 10 else ""
    return f"{what} the model never saw: {shown}{more}"
