"""Compress bytes with a trained model, and back: the file format and the entropy coding.

The model's next-token frequencies, computed in integers by exact.ExactModel (any cell; the same on
every machine, thread count and engine), drive constriction's range coder. The input is split
into S contiguous segments, each coded from a zero state; the S segments step together as one
batch (a GEMM of S rows costs little more than one row), in both directions:

    text  ──tokens──►  [ seg 0 | seg 1 | … | seg S-1 ]      S from the length (≥ 2,048 each)
    step t:  frequencies (S, V+1) ─► code token t of every segment still running, row by row,
             then the literal of each escape among them ─► feed the tokens, one LSTM step

Characters the model cannot spell (for a char model: not in its vocabulary; for any model:
bytes that are not UTF-8, which arrive as surrogate escapes) are coded as the escape symbol, then
their code point, uniform over 0x110000; an escaped stream keeps its state.

A segment the model codes in more bytes than it has (binary data, a script it never saw) is
stored raw instead: its bytes follow the coder's words, and a table in the header says which
segments they are. So the file is never more than the header (a few bytes per segment) larger
than its input.

The file format, and reading its header: format.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from charlstm.compress.exact import CODER_BITS, ExactModel, QuantizeError
from charlstm.compress.format import (
    MAX_SEGMENTS,
    MAX_TOKENS_PER_WORD,
    CompressError,
    Header,
    layout,
    read_header,
    segment_count,
)

LITERALS = 0x110000  # every Unicode code point
_LITERAL_BITS = float(np.log2(LITERALS))
_SLACK_BITS = 64  # the coder's own overhead, far more than measured (under 1 bit)
_SURROGATE = re.compile("[\ud800-\udfff]")

Progress = Callable[[int, int], None]  # (tokens coded so far, all tokens)


def require_constriction() -> Any:
    """The constriction module, or CompressError saying how to install it."""
    try:
        import constriction
    except ImportError as e:
        raise CompressError(
            "compress needs the constriction package: pip install 'charlstm[compress]'"
        ) from e
    return constriction


def _blocks(lengths: list[int]) -> list[tuple[int, int, int]]:
    """For segments of these lengths (longest first), the runs of steps in which the same rows
    are still running: (first step, end step, rows). Tokens are coded step by step, row by row
    within a step ("step-major"), so each run is a (steps, rows) block of the coded sequence:

        lengths 3 3 1    step 0: a0 b0 c0 │ block (0, 1, 3)
                         step 1: a1 b1    │ block (1, 3, 2)
                         step 2: a2 b2    │
    """
    blocks, start = [], 0
    for rows in range(len(lengths), 0, -1):
        end = lengths[rows - 1]
        if end > start:
            blocks.append((start, end, rows))
            start = end
    return blocks


def _step_major(segments: list[np.ndarray]) -> np.ndarray:
    """The tokens of segments (longest first) in the order they are coded."""
    lengths = [len(seg) for seg in segments]
    parts = [np.stack([seg[a:b] for seg in segments[:rows]], axis=1).ravel()
             for a, b, rows in _blocks(lengths)]  # fmt: skip
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def _segment_major(coded: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    """The inverse of _step_major: each segment's tokens."""
    pieces: list[list[np.ndarray]] = [[] for _ in lengths]
    pos = 0
    for a, b, rows in _blocks(lengths):
        block = coded[pos : pos + (b - a) * rows].reshape(b - a, rows)
        pos += (b - a) * rows
        for row in range(rows):
            pieces[row].append(block[:, row])
    return [np.concatenate(p) for p in pieces]


class Codec:
    """A model ready to compress and decompress: its integer-exact form and its tokenizer.

        codec = Codec(net, tokenizer)                 # quantises once (a second or so at 2×512)
        blob = codec.compress(data)                   # bytes → bytes
        assert codec.decompress(blob) == data

    `engine` is "torch" or "numpy"; both, on any machine, code the very same bytes.
    """

    def __init__(
        self, model: Any, tokenizer: Any, engine: str = "torch", device: str = "cpu"
    ) -> None:
        if tokenizer.kind not in ("char", "bpe"):
            raise CompressError(
                f"compress needs a char or bpe model; a {tokenizer.kind} model cannot spell "
                "words outside its vocabulary"
            )
        if tokenizer.kind == "char":
            # A table from code point to id (-1: the model never saw it).
            points = np.frombuffer(tokenizer.chars.encode("utf-32-le"), dtype=np.uint32)
            self._ids = np.full(int(points.max(initial=0)) + 1, -1, dtype=np.int64)
            self._ids[points] = np.arange(len(points))
            # A surrogate in the vocabulary stands for the byte it escapes; no input makes the
            # others, so they spell nothing (a file decoding to one fails its checksum).
            spelled = [_char_bytes(ch) for ch in tokenizer.chars]
        else:
            spelled = list(tokenizer._bytes)  # byte-level BPE: each token's own bytes
        self._token_bytes = spelled
        self._token_sizes = np.array([len(b) for b in spelled], dtype=np.int64)
        self._max_size = max(4, int(self._token_sizes.max(initial=0)))  # a literal: 4 at most
        newline = tokenizer.encode("\n", skip_unknown=True)
        start = int(newline[-1]) if len(newline) else 0  # each segment starts as after a line
        try:
            self.exact = ExactModel.from_model(model, start_token=start)
        except QuantizeError as e:
            raise CompressError(str(e), e.code) from e
        self.tokenizer, self.engine, self.device = tokenizer, engine, device
        from dataclasses import asdict

        from charlstm.formats.checkpoint import model_fingerprint

        digest = model_fingerprint(model, asdict(model.cfg), tokenizer.to_dict())
        self._fingerprint = bytes.fromhex(digest)
        self.escape = self.exact.vocab_size  # the symbol after the vocabulary
        self._token_bytes += [b""] * (self.escape - len(self._token_bytes))  # ids it never makes
        self.exact.start(1, engine, device)  # fail now on a bad engine or device

    def fingerprint(self) -> bytes:
        """The model's one fingerprint (checkpoint.model_fingerprint, 16 hex digits), as 8
        bytes; the integer arithmetic it drives is named by FORMAT_VERSION."""
        return self._fingerprint

    def legacy_fingerprint(self) -> bytes:
        """What files from before the one fingerprint carry: the quantised model, its tables
        and the tokenizer, hashed."""
        h = hashlib.sha256(self.exact.fingerprint())
        h.update(self.tokenizer.fingerprint().encode())
        return h.digest()[:8]

    # ---------------------------------------------------------------- text ↔ symbols

    def symbols(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        """(symbols (N,), literals (E,)): the model's token ids of `data`, with the escape
        symbol for each character the model cannot spell, whose code points are `literals`."""
        text = data.decode("utf-8", errors="surrogateescape")  # any bytes survive
        if self.tokenizer.kind == "char":
            points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            points = points.astype(np.int64)
            ids = np.full(len(points), -1, dtype=np.int64)
            known = points < len(self._ids)
            ids[known] = self._ids[points[known]]
            escaped = ids < 0
            ids[escaped] = self.escape
            return ids, points[escaped]
        # bpe: every text encodes; only surrogates (bytes that were not UTF-8) need escaping.
        parts: list[np.ndarray] = []
        literals: list[int] = []
        pos = 0
        for m in _SURROGATE.finditer(text):
            if m.start() > pos:
                parts.append(self.tokenizer.encode(text[pos : m.start()]).astype(np.int64))
            parts.append(np.array([self.escape], dtype=np.int64))
            literals.append(ord(m.group()))
            pos = m.end()
        if pos < len(text):
            parts.append(self.tokenizer.encode(text[pos:]).astype(np.int64))
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return ids, np.array(literals, dtype=np.int64)

    def text(self, symbols: np.ndarray, literals: np.ndarray) -> bytes:
        """The bytes `symbols` and `literals` spell (the inverse of `symbols`)."""
        return self._spell(_merge(symbols, literals, self.escape))

    def _spell(self, merged: np.ndarray) -> bytes:
        """The bytes of merged symbols: token ids (≥ 0), and literals as −1 − code point. Each
        token spells its own bytes, so any run of tokens spells a run of the input, even one
        that starts or ends inside a character (a BPE token may)."""
        table = self._token_bytes
        return b"".join([table[v] if v >= 0 else _literal_bytes(v) for v in merged.tolist()])

    def _sizes(self, merged: np.ndarray) -> np.ndarray:
        """The bytes each merged symbol spells, (N,)."""
        sizes = np.zeros(len(merged), dtype=np.int64)
        known = merged >= 0
        sizes[known] = self._token_sizes[merged[known]]
        points = -1 - merged[~known]
        sizes[~known] = np.where(
            (points >= 0xD800) & (points < 0xE000),  # surrogate escapes: one byte each
            1,
            1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000),
        )
        return sizes

    # ---------------------------------------------------------------- coding

    def compress(
        self, data: bytes, *, segments: int | None = None, progress: Progress | None = None
    ) -> bytes:
        """The compressed file (header + payload) of `data`: every segment coded with the
        model, except those it would make larger, which are stored raw."""
        c = require_constriction()
        symbols, literals = self.symbols(data)
        merged = _merge(symbols, literals, self.escape)
        try:
            same = self._spell(merged) == data
        except (UnicodeEncodeError, ValueError):
            same = False
        if not same:  # never write a file that would not decode to the input
            raise CompressError(f"this {self.tokenizer.kind} model cannot spell the input exactly")
        n = len(merged)
        s = segment_count(n) if segments is None else segments
        if n and not 1 <= s <= min(n, MAX_SEGMENTS):
            raise CompressError(
                f"segments must be between 1 and {min(n, MAX_SEGMENTS):,} for this input, got {s}"
            )
        if not n:
            return Header(self.fingerprint(), _checksum(data), len(data), 0, 0, ()).pack()
        lengths = [int(x) for x in layout(n, s)]
        starts = np.cumsum([0, *lengths])
        pieces = np.split(merged, starts[1:-1])
        sizes = [int(x) for x in np.add.reduceat(self._sizes(merged), starts[:-1])]
        base, total = 0, n  # the progress of both passes, as one

        def report(done: int, _: int) -> None:
            if progress is not None:
                progress(base + done, total)

        # Pass 1: every segment coded, measuring what each costs.
        words, bits = self._encode(c, pieces, report)
        best = self._pack(data, pieces, [False] * s, words)
        raw = [b > 8 * size for b, size in zip(bits, sizes, strict=True)]
        saving = sum(b / 8 - size for b, size, r in zip(bits, sizes, raw, strict=True) if r)
        if saving > 3 * s:  # more than the segment table costs
            # Pass 2: the other segments coded again without them (a segment's code does not
            # depend on the others), the raw ones stored as they are.
            coded = [p for p, r in zip(pieces, raw, strict=True) if not r]
            base, total = n, n + sum(len(p) for p in coded)
            words, _ = self._encode(c, coded, report)
            parts = [(size, True) if r else (len(p), False)
                     for p, r, size in zip(pieces, raw, sizes, strict=True)]  # fmt: skip
            best = min(best, self._pack(data, pieces, raw, words, parts), key=len)
        if progress is not None:
            progress(total, total)
        return best

    def _pack(
        self,
        data: bytes,
        pieces: list[np.ndarray],
        raw: list[bool],
        words: np.ndarray,
        parts: list[tuple[int, bool]] | None = None,
    ) -> bytes:
        """Header, words and raw bytes; zero words padded until N ≤ MAX_TOKENS_PER_WORD · W."""
        tokens = sum(len(p) for p, r in zip(pieces, raw, strict=True) if not r)
        need = -(-tokens // MAX_TOKENS_PER_WORD)
        if len(words) < need:
            words = np.concatenate([words, np.zeros(need - len(words), dtype=np.uint32)])
        if parts is None:
            parts = [(len(p), False) for p in pieces]
        header = Header(self.fingerprint(), _checksum(data), len(data), tokens, len(words),
                        tuple(parts))  # fmt: skip
        stored = b"".join(self._spell(p) for p, r in zip(pieces, raw, strict=True) if r)
        return header.pack() + words.astype("<u4").tobytes() + stored

    def _encode(
        self, c: Any, pieces: list[np.ndarray], progress: Progress | None
    ) -> tuple[np.ndarray, list[float]]:
        """Range-code segments (longest first) together: (the coder's words, each segment's
        cost in bits, −log₂ of the probability of each of its symbols and literals)."""
        if not pieces:
            return np.zeros(0, dtype=np.uint32), []
        lengths = [len(p) for p in pieces]
        coded = _step_major(pieces)
        encoder = c.stream.queue.RangeEncoder()
        categorical, uniform = _models(c)
        bits = np.zeros(len(pieces))
        pos = 0

        def code(freqs: np.ndarray) -> np.ndarray:
            nonlocal pos
            a = len(freqs)
            step = coded[pos : pos + a]
            pos += a
            escaped = step < 0
            row_syms = np.where(escaped, self.escape, step)
            encoder.encode(row_syms.astype(np.int32), categorical, freqs)
            bits[:a] += _bits(freqs, row_syms) + escaped * _LITERAL_BITS
            if escaped.any():
                encoder.encode((-1 - step[escaped]).astype(np.int32), uniform)
            return row_syms

        self._run(lengths, code, progress)
        return encoder.get_compressed(), bits.tolist()

    def decompress(self, blob: bytes, *, progress: Progress | None = None) -> bytes:
        """The original bytes of a compressed file, checked against its SHA-256; CompressError
        (one line) for another model's file, a truncated, damaged or crafted one. Time and
        memory are bounded by the file's size (read_header)."""
        c = require_constriction()
        h = read_header(blob)
        if h.fingerprint != self.fingerprint() and h.fingerprint != self.legacy_fingerprint():
            raise CompressError(
                f"compressed with another model (fingerprint {h.fingerprint.hex()}; this one "
                f"is {self.fingerprint().hex()}): decompress with the model that compressed it"
            )
        if h.length > h.raw_bytes + h.tokens * self._max_size:
            raise CompressError(
                f"the compressed file's header is damaged: {h.tokens:,} tokens of this model "
                f"cannot spell {h.length:,} bytes"
            )
        damaged = CompressError(
            "the compressed file is damaged: the text it decodes to fails its checksum"
        )
        coded: list[np.ndarray] = []
        if h.tokens:
            coded = self._decode(c, blob, h, progress)
        out, at, k = [], h.size + 4 * h.words, 0
        try:
            for n, raw in h.parts:
                if raw:
                    out.append(blob[at : at + n])
                    at += n
                else:
                    out.append(self._spell(coded[k]))
                    k += 1
        except (UnicodeEncodeError, ValueError):
            raise damaged from None
        data = b"".join(out)
        if len(data) != h.length or _checksum(data) != h.checksum:
            raise damaged
        return data

    def _decode(
        self, c: Any, blob: bytes, h: Header, progress: Progress | None
    ) -> list[np.ndarray]:
        """The merged symbols of each coded segment, in the file's order."""
        lengths = [n for n, raw in h.parts if not raw]
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # longest first, stable
        sorted_lengths = [lengths[i] for i in order]
        words = np.frombuffer(blob, "<u4", count=h.words, offset=h.size).copy()
        decoder = c.stream.queue.RangeDecoder(words)
        categorical, uniform = _models(c)
        # Grown as symbols arrive, so a damaged file stopped early never costs its claims.
        coded = np.zeros(min(h.tokens, 1 << 16), dtype=np.int32)
        pos, info, limit = 0, 0.0, 32.0 * h.words + _SLACK_BITS

        def decode(model: Any, arg: Any) -> np.ndarray:
            try:
                return np.asarray(decoder.decode(model, arg), dtype=np.int64)
            except Exception as e:  # constriction's complaint about data not its own
                raise CompressError(f"the compressed file is damaged ({e})") from e

        def code(freqs: np.ndarray) -> np.ndarray:
            nonlocal coded, pos, info
            a = len(freqs)
            row_syms = decode(categorical, freqs)
            escaped = row_syms == self.escape
            step = row_syms.copy()
            if escaped.any():
                step[escaped] = -1 - decode(uniform, int(escaped.sum()))
            info += float(_bits(freqs, row_syms).sum()) + int(escaped.sum()) * _LITERAL_BITS
            if info > limit:
                raise CompressError(
                    "the compressed file is damaged: it decodes to more than its data can hold"
                )
            if pos + a > len(coded):
                coded = np.concatenate([coded, np.zeros(min(len(coded), h.tokens - pos),
                                                        dtype=np.int32)])  # fmt: skip
            coded[pos : pos + a] = step
            pos += a
            return row_syms

        self._run(sorted_lengths, code, progress)
        segments = _segment_major(coded[:pos], sorted_lengths)
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int32)] * len(lengths)
        for row, i in enumerate(order):
            out[i] = segments[row]
        return out

    def _run(
        self,
        lengths: list[int],
        code: Callable[[np.ndarray], np.ndarray],
        progress: Progress | None,
    ) -> None:
        """Step the segments (longest first) together: at each step, `code(freqs)` codes (or
        decodes) the token of each segment still running (the first rows: lengths fall) and
        returns them; the escaped ones keep their state."""
        s, total, steps = len(lengths), sum(lengths), lengths[0]
        run = self.exact.start(s, self.engine, self.device)
        fill = np.full(s, self.exact.start_token, dtype=np.int64)
        done, every = 0, max(1, steps // 200)
        for first, end, a in _blocks(lengths):
            for t in range(first, end):
                freqs = run.frequencies()[:a].astype(np.float64)  # exact: integers below 2^24
                row_syms = code(freqs)
                done += a
                if progress is not None and (t % every == 0 or done == total):
                    progress(done, total)
                if t + 1 < steps:
                    escaped = np.zeros(s, dtype=bool)
                    escaped[:a] = row_syms == self.escape
                    tokens = fill.copy()
                    tokens[:a] = np.where(escaped[:a], fill[:a], row_syms)
                    run.advance(tokens, escaped)


def _merge(symbols: np.ndarray, literals: np.ndarray, escape: int) -> np.ndarray:
    """One int32 array: token ids, and each escape replaced by −1 − its literal's code point."""
    merged = symbols.astype(np.int32)
    merged[symbols == escape] = -1 - np.asarray(literals, dtype=np.int32)
    return merged


def _char_bytes(ch: str) -> bytes:
    try:
        return ch.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        return b""


def _literal_bytes(v: int) -> bytes:
    """The bytes of a literal (−1 − code point): a surrogate escape is the byte it stands for.
    UnicodeEncodeError for a lone surrogate no input makes (a damaged file)."""
    return chr(-1 - v).encode("utf-8", errors="surrogateescape")


def _bits(freqs: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """−log₂ of the probability the coder gives each row's symbol: (frequency + 1) / 2^24."""
    return CODER_BITS - np.log2(freqs[np.arange(len(freqs)), symbols] + 1)


def _checksum(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:8]


def _models(c: Any) -> tuple[Any, Any]:
    """The coder's two models: categorical over the step's frequencies, uniform for literals.
    perfect=False is constriction's "fast" quantisation, which keeps integer weights that
    already sum to 2^24 − n as they are (+1 each): no floating point reaches the coder."""
    return c.stream.model.Categorical(perfect=False), c.stream.model.Uniform(LITERALS)
