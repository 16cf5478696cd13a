"""Compress bytes with a trained model, and back: the file format and the entropy coding.

The model's next-token frequencies, computed in integers by quantized.ExactLSTM (the same on
every machine, thread count and engine), drive constriction's range coder. The input is split
into S contiguous segments, each coded from a zero state; the S segments step together as one
batch (a GEMM of S rows costs little more than one row), in both directions:

    text  ──tokens──►  [ seg 0 | seg 1 | … | seg S-1 ]      S from the length (≥ 2,048 each)
    step t:  frequencies (S, V+1) ─► code token t of every segment still running, row by row,
             then the literal of each escape among them ─► feed the tokens, one LSTM step

Characters the model cannot spell (for a char model: not in its vocabulary; for any model:
bytes that are not UTF-8, which arrive as surrogate escapes) are coded as the escape symbol, then
their code point, uniform over 0x110000; an escaped stream keeps its state.

A compressed file:

    offset  size  field
    0       4     magic b"\\x89CLZ" (a non-text first byte, so it is never taken for text)
    4       1     format version (1)
    5       1     flags (0; reserved)
    6       8     the model's fingerprint, as `charlstm info` shows it (Codec.fingerprint)
    14      8     SHA-256 of the original bytes, its first 8
    22      var   original length in bytes, tokens N, segments S, payload length in 32-bit
                  words: four unsigned LEB128 numbers
    …       4     CRC-32 of the header bytes before it
    …       4·W   the range coder's words, little-endian

Decoding checks the header, the model's fingerprint and the length before it starts, and the
original's SHA-256 before it returns anything: wrong text is never returned.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError
from charlstm.quantized import ExactLSTM, QuantizeError

MAGIC = b"\x89CLZ"
FORMAT_VERSION = 1
# Segments of at least this many tokens: each starts from a zero state, which costs a trained
# character model about 7 bits (0.2% at this length; BENCHMARKS.md).
MIN_SEGMENT = 2048
MAX_SEGMENTS = 256
LITERALS = 0x110000  # every Unicode code point
_SURROGATE = re.compile("[\ud800-\udfff]")

Progress = Callable[[int, int], None]  # (tokens coded so far, all tokens)


class CompressError(CharlstmError):
    """A file that cannot be decompressed, or a model that cannot compress; one line."""


def require_constriction() -> Any:
    """The constriction module, or CompressError saying how to install it."""
    try:
        import constriction
    except ImportError as e:
        raise CompressError(
            "compress needs the constriction package: pip install 'charlstm[compress]'"
        ) from e
    return constriction


@dataclass(frozen=True)
class Header:
    fingerprint: bytes  # 8 bytes: Codec.fingerprint() of the model that compressed
    checksum: bytes  # 8 bytes: SHA-256 of the original
    length: int  # original bytes
    tokens: int  # N: symbols coded with the model (escapes included, literals not)
    segments: int  # S
    words: int  # payload length in 32-bit words
    size: int  # header bytes

    def pack(self) -> bytes:
        head = MAGIC + bytes([FORMAT_VERSION, 0]) + self.fingerprint + self.checksum
        head += b"".join(_leb128(v) for v in (self.length, self.tokens, self.segments, self.words))
        return head + struct.pack("<I", zlib.crc32(head))


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_header(blob: bytes) -> Header:
    """The header of a compressed file; CompressError when it is not one, or is damaged."""
    if len(blob) < 4 or blob[:4] != MAGIC:
        raise CompressError("not a charlstm compressed file")
    if len(blob) < 6:
        raise CompressError("the compressed file is truncated (in its header)")
    if blob[4] > FORMAT_VERSION:
        raise CompressError(
            f"compressed with format {blob[4]}, newer than this charlstm reads "
            f"({FORMAT_VERSION}); upgrade charlstm"
        )
    pos, numbers = 22, []
    for _ in range(4):
        value, shift = 0, 0
        while True:
            if pos >= len(blob):
                raise CompressError("the compressed file is truncated (in its header)")
            byte = blob[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 63:
                raise CompressError("the compressed file's header is damaged")
        numbers.append(value)
    if len(blob) < pos + 4:
        raise CompressError("the compressed file is truncated (in its header)")
    if struct.unpack("<I", blob[pos : pos + 4])[0] != zlib.crc32(blob[:pos]):
        raise CompressError("the compressed file's header is damaged (its checksum fails)")
    if blob[5] != 0:
        raise CompressError(f"the compressed file uses features this charlstm lacks ({blob[5]})")
    length, tokens, segments, words = numbers
    if tokens > length or segments > max(tokens, 0) or (tokens and not segments):
        raise CompressError("the compressed file's header is damaged")
    return Header(blob[6:14], blob[14:22], length, tokens, segments, words, pos + 4)


def segment_count(tokens: int) -> int:
    """How many segments a text of `tokens` tokens is cut into: as many as keep each at least
    MIN_SEGMENT long (the zero-state cost under 0.2%), at most MAX_SEGMENTS, at least 1."""
    return max(1, min(MAX_SEGMENTS, tokens // MIN_SEGMENT))


def _layout(tokens: int, segments: int) -> np.ndarray:
    """Segment lengths (S,), longest first, differing by at most one."""
    base, extra = divmod(tokens, segments)
    return base + (np.arange(segments) < extra)


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
        newline = tokenizer.encode("\n", skip_unknown=True)
        start = int(newline[-1]) if len(newline) else 0  # each segment starts as after a line
        try:
            self.exact = ExactLSTM.from_model(model, start_token=start)
        except QuantizeError as e:
            raise CompressError(str(e)) from e
        self.tokenizer, self.engine, self.device = tokenizer, engine, device
        from dataclasses import asdict

        from charlstm.checkpoint import model_fingerprint

        digest = model_fingerprint(model, asdict(model.cfg), tokenizer.to_dict())
        self._fingerprint = bytes.fromhex(digest)
        self.escape = self.exact.vocab_size  # the symbol after the vocabulary
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
        where = np.flatnonzero(symbols == self.escape)
        pieces, start = [], 0
        for k, at in enumerate(where.tolist()):
            pieces.append(self.tokenizer.decode(symbols[start:at].tolist()))
            pieces.append(chr(int(literals[k])))
            start = at + 1
        pieces.append(self.tokenizer.decode(symbols[start:].tolist()))
        return "".join(pieces).encode("utf-8", errors="surrogateescape")

    # ---------------------------------------------------------------- coding

    def compress(
        self, data: bytes, *, segments: int | None = None, progress: Progress | None = None
    ) -> bytes:
        """The compressed file (header + payload) of `data`."""
        c = require_constriction()
        symbols, literals = self.symbols(data)
        try:
            same = self.text(symbols, literals) == data
        except (UnicodeEncodeError, ValueError):
            same = False
        if not same:  # never write a file that would not decode to the input
            raise CompressError(f"this {self.tokenizer.kind} model cannot spell the input exactly")
        n = len(symbols)
        s = segment_count(n) if segments is None else segments
        if n and not 1 <= s <= n:
            raise CompressError(f"segments must be between 1 and {n:,} for this input, got {s}")
        words = np.zeros(0, dtype=np.uint32)
        if n:
            lengths = _layout(n, s)
            escaped_points = np.zeros(n, dtype=np.int64)
            escaped_points[symbols == self.escape] = literals
            grid, lits = _to_grid(symbols, lengths), _to_grid(escaped_points, lengths)
            encoder = c.stream.queue.RangeEncoder()
            categorical, uniform = _models(c)

            def code(t: int, freqs: np.ndarray) -> np.ndarray:
                row_syms = grid[: len(freqs), t]
                encoder.encode(row_syms.astype(np.int32), categorical, freqs)
                escaped = row_syms == self.escape
                if escaped.any():
                    encoder.encode(lits[: len(freqs), t][escaped].astype(np.int32), uniform)
                return row_syms

            self._run(lengths, code, progress)
            words = encoder.get_compressed()
        header = Header(self.fingerprint(), _checksum(data), len(data), n, s if n else 0,
                        len(words), 0)  # fmt: skip
        return header.pack() + words.astype("<u4").tobytes()

    def decompress(self, blob: bytes, *, progress: Progress | None = None) -> bytes:
        """The original bytes of a compressed file, checked against its SHA-256; CompressError
        (one line) for another model's file, a truncated or a damaged one."""
        c = require_constriction()
        h = read_header(blob)
        if h.fingerprint != self.fingerprint() and h.fingerprint != self.legacy_fingerprint():
            raise CompressError(
                f"compressed with another model (fingerprint {h.fingerprint.hex()}; this one "
                f"is {self.fingerprint().hex()}): decompress with the model that compressed it"
            )
        payload = blob[h.size :]
        if len(payload) < 4 * h.words:
            raise CompressError(
                f"the compressed file is truncated: {len(payload):,} bytes of data where "
                f"{4 * h.words:,} were written"
            )
        if len(payload) > 4 * h.words:
            raise CompressError(
                f"the compressed file is damaged: {len(payload) - 4 * h.words:,} bytes after "
                "its end"
            )
        data: bytes | None = b""
        if h.tokens:
            lengths = _layout(h.tokens, h.segments)
            grid = np.zeros((h.segments, int(lengths[0])), dtype=np.int64)
            lits = np.zeros_like(grid)
            categorical, uniform = _models(c)
            decoder = c.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").copy())

            def decode(model: Any, arg: Any) -> np.ndarray:
                try:
                    return np.asarray(decoder.decode(model, arg), dtype=np.int64)
                except Exception as e:  # constriction's complaint about data not its own
                    raise CompressError(f"the compressed file is damaged ({e})") from e

            def code(t: int, freqs: np.ndarray) -> np.ndarray:
                row_syms = decode(categorical, freqs)
                grid[: len(freqs), t] = row_syms
                rows = np.flatnonzero(row_syms == self.escape)
                if len(rows):
                    lits[rows, t] = decode(uniform, len(rows))
                return row_syms

            self._run(lengths, code, progress)
            symbols, points = _from_grid(grid, lengths), _from_grid(lits, lengths)
            try:
                data = self.text(symbols, points[symbols == self.escape])
            except (UnicodeEncodeError, ValueError, IndexError):
                data = None
        if data is None or len(data) != h.length or _checksum(data) != h.checksum:
            raise CompressError(
                "the compressed file is damaged: the text it decodes to fails its checksum"
            )
        return data

    def _run(
        self,
        lengths: np.ndarray,
        code: Callable[[int, np.ndarray], np.ndarray],
        progress: Progress | None,
    ) -> None:
        """Step the S segments together: at step t, `code(t, freqs)` codes (or decodes) the
        token of each segment still running (the first A rows: lengths fall) and returns
        them; the escaped ones keep their state."""
        s, total = len(lengths), int(lengths.sum())
        run = self.exact.start(s, self.engine, self.device)
        active = np.searchsorted(-lengths, -np.arange(int(lengths[0])))  # rows with length > t
        fill = np.full(s, self.exact.start_token, dtype=np.int64)
        done, every = 0, max(1, int(lengths[0]) // 200)
        for t, a in enumerate(active.tolist()):
            freqs = run.frequencies()[:a].astype(np.float64)  # exact: integers below 2^24
            row_syms = code(t, freqs)
            done += a
            if progress is not None and (t % every == 0 or done == total):
                progress(done, total)
            if t + 1 < len(active):
                escaped = np.zeros(s, dtype=bool)
                escaped[:a] = row_syms == self.escape
                tokens = fill.copy()
                tokens[:a] = np.where(escaped[:a], fill[:a], row_syms)
                run.advance(tokens, escaped)


def _checksum(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:8]


def _models(c: Any) -> tuple[Any, Any]:
    """The coder's two models: categorical over the step's frequencies, uniform for literals.
    perfect=False is constriction's "fast" quantisation, which keeps integer weights that
    already sum to 2^24 − n as they are (+1 each): no floating point reaches the coder."""
    return c.stream.model.Categorical(perfect=False), c.stream.model.Uniform(LITERALS)


def _to_grid(flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N,) → (S, max length): segment s in row s, padded with zeros."""
    grid = np.zeros((len(lengths), int(lengths[0])), dtype=np.int64)
    start = 0
    for row, ln in enumerate(lengths.tolist()):
        grid[row, :ln] = flat[start : start + ln]
        start += ln
    return grid


def _from_grid(grid: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([grid[row, :ln] for row, ln in enumerate(lengths.tolist())])
