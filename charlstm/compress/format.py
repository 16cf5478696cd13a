"""The .clz file format: its header, written and read, every claim checked against what the
file can hold, and how a text is cut into segments.

A compressed file:

    offset  size  field
    0       4     magic b"\\x89CLZ" (a non-text first byte, so it is never taken for text)
    4       1     format version (2; version 1 files, which have no table, are read too)
    5       1     flags: 1 = the segment table below is present; no other bit is defined
    6       8     the model's fingerprint, as `charlstm info` shows it (Codec.fingerprint)
    14      8     SHA-256 of the original bytes, its first 8
    22      var   original length in bytes L, tokens N coded with the model, segments S, payload
                  length in 32-bit words W: four unsigned LEB128 numbers
    …       var   (flag 1) the segment table: per segment, one LEB128 of 2·n + r, r = 1 for a
                  raw segment of n bytes, r = 0 for a coded one of n tokens. Without it, the S
                  segments are all coded, N tokens cut into S lengths differing by at most one,
                  longest first
    …       4     CRC-32 of the header bytes before it
    …       4·W   the range coder's words, little-endian
    …       R     the raw segments' bytes, in order

Every claim is checked against what the file can hold before anything is allocated: the payload
is exactly 4·W + R bytes, S ≤ 256, N ≤ L − R, and N ≤ 1,024·W. The last holds for every file
the encoder writes (when the model predicts so well that fewer words would do, it pads with zero
words, which the decoder never reads), so decoding costs at most 256 model steps per byte of the
file. While decoding, the information of the symbols decoded so far (−log₂ of each one's coded
probability) must stay within the 32·W bits the words hold, so a damaged payload stops early.
Decoding then checks the original's SHA-256 before it returns anything: wrong text is never
returned.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from charlstm.errors import CharlstmError

MAGIC = b"\x89CLZ"
FORMAT_VERSION = 2  # 2: raw segments and the segment table (flag 1); 1 had neither
READS = (1, 2)  # the format versions this charlstm decompresses
TABLE = 1  # the flag saying a segment table follows the four numbers
# Segments of at least this many tokens: each starts from a zero state, which costs a trained
# character model about 7 bits (0.2% at this length; BENCHMARKS.md).
MIN_SEGMENT = 2048
MAX_SEGMENTS = 256  # also the most a file may claim: the batch the decoder allocates
# A file holds at least one 32-bit word of coded data per this many tokens (the encoder pads):
# 0.03 bits per token, far below any text's, so the pad costs real inputs nothing, and decoding
# costs at most 256 model steps per byte of the file.
MAX_TOKENS_PER_WORD = 1024


class CompressError(CharlstmError):
    """A file that cannot be decompressed, or a model that cannot compress; one line."""


@dataclass(frozen=True)
class Header:
    fingerprint: bytes  # 8 bytes: Codec.fingerprint() of the model that compressed
    checksum: bytes  # 8 bytes: SHA-256 of the original
    length: int  # L: original bytes
    tokens: int  # N: symbols coded with the model (escapes included, literals not)
    words: int  # W: the range coder's payload in 32-bit words
    parts: tuple[tuple[int, bool], ...]  # per segment: (tokens, False) coded, (bytes, True) raw
    size: int = 0  # header bytes
    version: int = FORMAT_VERSION

    @property
    def segments(self) -> int:
        return len(self.parts)

    @property
    def raw_segments(self) -> int:
        return sum(raw for _, raw in self.parts)

    @property
    def raw_bytes(self) -> int:
        return sum(n for n, raw in self.parts if raw)

    def pack(self) -> bytes:
        table = self.parts != plain_parts(self.tokens, self.segments)
        head = MAGIC + bytes([FORMAT_VERSION, TABLE if table else 0])
        head += self.fingerprint + self.checksum
        numbers = [self.length, self.tokens, self.segments, self.words]
        if table:
            numbers += [2 * n + raw for n, raw in self.parts]
        head += b"".join(leb128(v) for v in numbers)
        return head + struct.pack("<I", zlib.crc32(head))


def leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def plain_parts(tokens: int, segments: int) -> tuple[tuple[int, bool], ...]:
    """The segments of a file without a table: all coded, N tokens cut by layout."""
    if not segments:
        return ()
    return tuple((int(n), False) for n in layout(tokens, segments))


def read_header(blob: bytes) -> Header:
    """The header of a compressed file, every claim in it checked against the file's size;
    CompressError when it is not one, or is damaged, truncated or crafted."""
    if len(blob) < 4 or blob[:4] != MAGIC:
        raise CompressError("not a charlstm compressed file")
    if len(blob) < 6:
        raise CompressError("the compressed file is truncated (in its header)")
    version, flags = blob[4], blob[5]
    if version > FORMAT_VERSION:
        raise CompressError(
            f"compressed with format {version}, newer than this charlstm reads "
            f"({FORMAT_VERSION}); upgrade charlstm"
        )
    if version not in READS:
        raise CompressError(f"the compressed file's header is damaged (format {version})")
    if flags & ~(TABLE if version >= 2 else 0):
        raise CompressError(f"the compressed file uses features this charlstm lacks ({flags})")
    pos = 22

    def number() -> int:
        nonlocal pos
        value, shift = 0, 0
        while True:
            if pos >= len(blob):
                raise CompressError("the compressed file is truncated (in its header)")
            byte = blob[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
            if shift > 63:
                raise CompressError("the compressed file's header is damaged")

    length, tokens, segments, words = (number() for _ in range(4))
    if segments > MAX_SEGMENTS:  # before reading a table of that many entries
        raise CompressError(
            f"the compressed file's header is damaged: it claims {segments:,} segments "
            f"(at most {MAX_SEGMENTS})"
        )
    entries = [number() for _ in range(segments)] if flags & TABLE else None
    if len(blob) < pos + 4:
        raise CompressError("the compressed file is truncated (in its header)")
    if struct.unpack("<I", blob[pos : pos + 4])[0] != zlib.crc32(blob[:pos]):
        raise CompressError("the compressed file's header is damaged (its checksum fails)")
    size = pos + 4
    if entries is None:
        if (tokens == 0) != (segments == 0) or segments > tokens:
            raise CompressError("the compressed file's header is damaged")
        raw = 0
    else:
        if not entries or any(e >> 1 == 0 for e in entries):
            raise CompressError("the compressed file's segment table is damaged")
        if sum(e >> 1 for e in entries if not e & 1) != tokens:
            raise CompressError("the compressed file's segment table is damaged")
        raw = sum(e >> 1 for e in entries if e & 1)
    payload, written = len(blob) - size, 4 * words + raw
    if payload < written:
        raise CompressError(
            f"the compressed file is truncated: {payload:,} bytes of data where {written:,} "
            "were written"
        )
    if payload > written:
        raise CompressError(
            f"the compressed file is damaged: {payload - written:,} bytes after its end"
        )
    if tokens > MAX_TOKENS_PER_WORD * words or tokens + raw > length:
        raise CompressError(
            f"the compressed file's header is damaged: it claims {tokens:,} tokens and "
            f"{length:,} bytes, more than its {4 * words:,} bytes of coded data can hold"
        )
    # Only now, every number bounded by the file's size, is anything built from them.
    if entries is None:
        parts = plain_parts(tokens, segments)
    else:
        parts = tuple((e >> 1, bool(e & 1)) for e in entries)
    return Header(blob[6:14], blob[14:22], length, tokens, words, parts, size, version)


def segment_count(tokens: int) -> int:
    """How many segments a text of `tokens` tokens is cut into: as many as keep each at least
    MIN_SEGMENT long (the zero-state cost under 0.2%), at most MAX_SEGMENTS, at least 1."""
    return max(1, min(MAX_SEGMENTS, tokens // MIN_SEGMENT))


def layout(tokens: int, segments: int) -> np.ndarray:
    """Segment lengths (S,), longest first, differing by at most one."""
    base, extra = divmod(tokens, segments)
    return base + (np.arange(segments) < extra)
